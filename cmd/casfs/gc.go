package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/store"
)

var dryRunFlag = &cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print what would be removed, remove nothing"}

// gcTopCommands are `lease` and `gc`; gcContentCommands and gcImageCommands
// are the prune subcommands of `content` and `image`.
func gcTopCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:   "lease",
			Usage:  "manage leases, which keep what they hold from garbage collection",
			Action: subcommandsOf,
			Subcommands: []*cli.Command{
				{Name: "ls", Aliases: []string{"list"}, Usage: "list leases", Flags: []cli.Flag{quietFlag, formatFlag}, Action: leaseList},
				{
					Name: "create", Usage: "create a lease and print its id",
					Flags: []cli.Flag{
						&cli.StringFlag{Name: "id", Usage: "lease id (default: a random one)"},
						&cli.DurationFlag{Name: "expires", Aliases: []string{"x"}, Usage: "expire after this long (e.g. 24h; default: never)"},
						&cli.StringSliceFlag{Name: "label", Usage: "label key=value (repeatable)"},
					},
					Action: leaseCreate,
				},
				{Name: "rm", Aliases: []string{"delete"}, Usage: "remove leases", ArgsUsage: "ID...", Action: leaseRemove},
			},
		},
		{
			Name:   "gc",
			Usage:  "remove expired leases, and blobs and snapshots that no image, lease or root reaches",
			Flags:  []cli.Flag{dryRunFlag, quietFlag, formatFlag},
			Action: collectAction(store.CollectOptions{}),
		},
	}
}

func gcContentCommands() []*cli.Command {
	return []*cli.Command{{
		Name:   "prune",
		Usage:  "remove blobs that no image, lease or root reaches",
		Flags:  []cli.Flag{dryRunFlag, quietFlag, formatFlag},
		Action: collectAction(store.CollectOptions{Content: true}),
	}}
}

func gcImageCommands() []*cli.Command {
	return []*cli.Command{{
		Name: "prune",
		Usage: "remove digest-only names (repo@sha256:...) that a tag also points at; with --all, " +
			"every image no image mount or lease uses; then what only they needed",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "remove every image not used by an image mount or a lease"},
			dryRunFlag, quietFlag, formatFlag,
		},
		Action: imagePrune,
	}}
}

// snapshotPruneCommand is `snapshot prune`, for the snapshot command's owner
// to add to its subcommands.
func snapshotPruneCommand() *cli.Command {
	return &cli.Command{
		Name:   "prune",
		Usage:  "remove committed snapshots that no image, mount, lease or root reaches",
		Flags:  []cli.Flag{dryRunFlag, quietFlag, formatFlag},
		Action: collectAction(store.CollectOptions{Snapshots: true}),
	}
}

func collectAction(opts store.CollectOptions) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := wantArgs(c, 0, 0); err != nil {
			return err
		}
		format, err := outputFormat(c)
		if err != nil {
			return err
		}
		opts.DryRun = c.Bool("dry-run")
		return withGarbage(c, false, func(s store.Garbage) error {
			rep, err := s.Collect(c.Context, opts)
			if err != nil {
				return err
			}
			return printReport(c.App.Writer, rep, format, c.Bool("quiet"))
		})
	}
}

func imagePrune(c *cli.Context) error {
	if err := wantArgs(c, 0, 0); err != nil {
		return err
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	opts := store.ImagePruneOptions{All: c.Bool("all"), DryRun: c.Bool("dry-run")}
	return withGarbage(c, false, func(s store.Garbage) error {
		rep, err := s.PruneImages(c.Context, opts)
		if err != nil {
			return err
		}
		return printReport(c.App.Writer, rep, format, c.Bool("quiet"))
	})
}

// printReport prints one line per thing removed ("removed blob sha256:...
// 1.2 KiB", or "would remove" for a dry run) and the total; -q prints the
// identifiers alone.
func printReport(w io.Writer, rep store.GCReport, format string, quiet bool) error {
	if format == "json" {
		return printJSON(w, rep)
	}
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	line := func(kind, id string, size int64, sized bool) {
		switch {
		case quiet:
			fmt.Fprintln(w, id)
		case sized:
			fmt.Fprintf(w, "%s %s %s %s\n", verb, kind, id, humanSize(size))
		default:
			fmt.Fprintf(w, "%s %s %s\n", verb, kind, id)
		}
	}
	for _, n := range rep.Images {
		line("image", n, 0, false)
	}
	for _, id := range rep.Leases {
		line("expired lease", id, 0, false)
	}
	for _, b := range rep.Blobs {
		line("blob", b.Digest.String(), b.Size, true)
	}
	for _, sn := range rep.Snapshots {
		line("snapshot", sn.Key, sn.Size, true)
	}
	if !quiet {
		total := "reclaimed"
		if rep.DryRun {
			total = "would reclaim"
		}
		fmt.Fprintf(w, "%s %s (%d bytes)\n", total, humanSize(rep.Reclaimed), rep.Reclaimed)
	}
	return nil
}

func leaseList(c *cli.Context) error {
	if err := wantArgs(c, 0, 0); err != nil {
		return err
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	return withGarbage(c, false, func(s store.Garbage) error {
		ls, err := s.ListLeases(c.Context)
		if err != nil {
			return err
		}
		switch {
		case format == "json":
			return printJSON(c.App.Writer, ls)
		case c.Bool("quiet"):
			for _, l := range ls {
				fmt.Fprintln(c.App.Writer, l.ID)
			}
			return nil
		}
		tw := newTable(c.App.Writer, "ID", "CREATED AT", "EXPIRES", "RESOURCES", "LABELS")
		for _, l := range ls {
			exp := "never"
			if !l.Expires.IsZero() {
				exp = l.Expires.Format(time.RFC3339)
			}
			row(tw, l.ID, l.CreatedAt.Format(time.RFC3339), exp, len(l.Blobs)+len(l.Snapshots), formatLabels(l.Labels))
		}
		return tw.Flush()
	})
}

func leaseCreate(c *cli.Context) error {
	if err := wantArgs(c, 0, 0); err != nil {
		return err
	}
	opts := store.LeaseOptions{ID: c.String("id"), Expires: c.Duration("expires"), Labels: map[string]string{}}
	if opts.Expires < 0 {
		return usagef("--expires must not be negative")
	}
	for _, kv := range c.StringSlice("label") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usagef("--label %q: want key=value", kv)
		}
		opts.Labels[k] = v
	}
	return withGarbage(c, true, func(s store.Garbage) error {
		l, err := s.CreateLease(c.Context, opts)
		if err != nil {
			return argError(err)
		}
		fmt.Fprintln(c.App.Writer, l.ID)
		return nil
	})
}

func leaseRemove(c *cli.Context) error {
	if err := wantArgs(c, 1, -1); err != nil {
		return err
	}
	return withGarbage(c, false, func(s store.Garbage) error {
		for _, id := range c.Args().Slice() {
			if err := s.RemoveLease(c.Context, id); err != nil {
				return argError(err)
			}
			fmt.Fprintln(c.App.Writer, id)
		}
		return nil
	})
}
