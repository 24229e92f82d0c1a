// Command casfs is the command line of casfs, shaped like containerd's ctr.
// Actions are thin: parse, call the store API, print.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/daemon"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/store"
)

// Exit statuses, documented in the README.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	var err error
	if isMountHelperCall(args, app.Commands) {
		err = mountHelper(context.Background(), args, stdout, stderr)
	} else {
		ctx, stop := interruptible()
		err = app.RunContext(ctx, interleaveFlags(helpAsFlag(args, app), app))
		stop()
	}
	if err == nil {
		return exitOK
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) && ec.ExitCode() == exitOK {
		return exitOK
	}
	fmt.Fprintf(stderr, "casfs: %v\n", err)
	if isUsage(err) {
		return exitUsage
	}
	return exitFailed
}

// usageError marks a command line the user got wrong (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// argError turns a malformed argument (errdefs.ErrInvalidArgument from
// parsing what the user typed) into a usage error; other errors pass.
func argError(err error) error {
	if err != nil && errdefs.IsUsage(err) {
		return usageError{err.Error()}
	}
	return err
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "casfs",
		Usage:                "a content-addressed store for OCI images, shown as one FUSE filesystem",
		Version:              version(),
		EnableBashCompletion: true,
		Reader:               stdin,
		Writer:               stdout,
		ErrWriter:            stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "root", Value: "/var/lib/casfs", EnvVars: []string{"CASFS_ROOT"}, Usage: "store root directory"},
			&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "trace, debug (each registry request), info, warn or error"},
		},
		Before: func(c *cli.Context) error {
			var lvl slog.Level
			switch s := c.String("log-level"); s {
			case "trace":
				lvl = index.LevelTrace
			default:
				if err := lvl.UnmarshalText([]byte(s)); err != nil {
					return usagef("--log-level %q: want trace, debug, info, warn or error", s)
				}
			}
			setLogLevel(c, lvl)
			return nil
		},
		Commands: concat([]*cli.Command{contentCommand(), imageCommand(), mountCommand(), serveCommand()},
			snapshotTopCommands(), gcTopCommands(), checkTopCommands(), archiveTopCommands(),
			[]*cli.Command{versionCommand(), completionCommand()}),
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageError{err.Error()}
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("unknown command %q (see casfs --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
	markUsageErrors(app.Commands)
	addAliases(app.Commands)
	return app
}

// setLogLevel sends logs at lvl and above to stderr.
func setLogLevel(c *cli.Context, lvl slog.Level) {
	slog.SetDefault(slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: lvl})))
}

// markUsageErrors makes flag errors of every subcommand usage errors (exit
// 2). Only the top level has a help command (`casfs help image`): below it,
// "help" and "h" stay arguments (an ingest ref, an image name).
func markUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{err.Error()} }
		c.HideHelpCommand = true
		markUsageErrors(c.Subcommands)
	}
}

// openStore works through the socket of the process that holds the root
// (the mount daemon or another command) when one serves it, and opens the
// store itself otherwise, serving the socket to other commands until it is
// closed. Commands that write pass create=true; the others refuse a root
// that does not exist.
func openStore(c *cli.Context, create bool) (store.API, error) {
	limits, err := unpackLimits(c)
	if err != nil {
		return nil, err
	}
	return daemon.Open(c.Context, c.String("root"), daemon.OpenOptions{
		Create: create, Limits: limits, Notice: c.App.ErrWriter,
		ThroughSocket: func() {
			if limitFlagGiven(c) {
				slog.Warn("another casfs process serves this root and unpacks with its own limits; the --max-* flags given here do not apply")
			}
		},
	})
}

// withPart makes a runner that opens the store, hands fn the one part of
// it a command group uses, and closes the store afterwards.
func withPart[P any](part func(store.API) P) func(c *cli.Context, create bool, fn func(P) error) error {
	return func(c *cli.Context, create bool, fn func(P) error) error {
		s, err := openStore(c, create)
		if err != nil {
			return err
		}
		err = fn(part(s))
		if cerr := s.Close(); err == nil && cerr != nil {
			err = cerr
		}
		return err
	}
}

// Each command group takes only its part of the store.
var (
	withContent   = withPart(func(s store.API) store.Content { return s })
	withImages    = withPart(func(s store.API) store.Images { return s })
	withArchives  = withPart(func(s store.API) store.Archives { return s })
	withGarbage   = withPart(func(s store.API) store.Garbage { return s })
	withSnapshots = withPart(func(s store.API) store.Snapshots { return s })
	withChecker   = withPart(func(s store.API) store.Checker { return s })
	withContentGC = withPart(func(s store.API) contentGC { return s })
)

// contentGC is what content rm needs: --force removes through the collector.
type contentGC interface {
	store.Content
	store.Garbage
}

// subcommandsOf fails a group command called without a valid subcommand.
func subcommandsOf(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("unknown command %q for %q (see casfs %s --help)", c.Args().First(), c.Command.FullName(), c.Command.Name)
	}
	_ = cli.ShowSubcommandHelp(c)
	return usagef("%s needs a subcommand", c.Command.FullName())
}

// wantArgs checks the number of positional arguments.
func wantArgs(c *cli.Context, min, max int) error {
	n := c.NArg()
	if n < min || (max >= 0 && n > max) {
		return usagef("%s: wrong number of arguments (usage: %s %s)", c.Command.HelpName, c.Command.HelpName, c.Command.ArgsUsage)
	}
	return nil
}

func concat[T any](parts ...[]T) []T {
	var out []T
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
