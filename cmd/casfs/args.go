package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interleaveFlags lets flags follow positional arguments, as docker,
// nerdctl and crane users type them (`image pull REF --plain-http`):
// urfave/cli stops parsing flags at the first argument, so the flags of the
// command being run are moved in front of its arguments. A "--" keeps what
// follows it positional.
func interleaveFlags(args []string, app *cli.App) []string {
	if len(args) < 2 || isCompletionCall(args) {
		return args // urfave/cli wants the completion flag last, as the shell put it
	}
	out := []string{args[0]}
	rest := args[1:]
	// Global flags, then the command path.
	flags := app.Flags
	cmds := app.Commands
	var leaf *cli.Command
	for len(rest) > 0 {
		a := rest[0]
		if a == "--" {
			return append(out, rest...)
		}
		if isFlagToken(a) {
			n := flagTokens(a, rest[1:], flags)
			out = append(out, rest[:n]...)
			rest = rest[n:]
			continue
		}
		c := findCommand(cmds, a)
		if c == nil {
			break
		}
		out = append(out, a)
		rest = rest[1:]
		leaf, flags, cmds = c, c.Flags, c.Subcommands
		if len(cmds) == 0 {
			break
		}
	}
	if leaf == nil || len(leaf.Subcommands) > 0 || leaf.SkipFlagParsing {
		return append(out, rest...)
	}
	var fl, pos []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			pos = append(pos, rest[i:]...)
			break
		}
		if isFlagToken(a) {
			n := flagTokens(a, rest[i+1:], flags)
			fl = append(fl, rest[i:i+n]...)
			i += n - 1
			continue
		}
		pos = append(pos, a)
	}
	return append(append(out, fl...), pos...)
}

func isFlagToken(a string) bool { return len(a) > 1 && a[0] == '-' }

// flagTokens says how many tokens the flag a takes: 2 when it is a known
// flag that needs a value given as the next token, else 1.
func flagTokens(a string, next []string, flags []cli.Flag) int {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") || len(next) == 0 {
		return 1
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if _, isBool := f.(*cli.BoolFlag); isBool {
				return 1
			}
			return 2
		}
	}
	return 1
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// isCompletionCall reports a shell asking for completions (the scripts of
// `casfs completion` end the command line with this flag).
func isCompletionCall(args []string) bool {
	return len(args) > 0 && args[len(args)-1] == "--generate-bash-completion"
}

// helpAsFlag turns `casfs [global flags] help CMD...` into `casfs [global
// flags] CMD... --help`, which shows a group's subcommands (urfave/cli's
// help command shows a group only once it has run).
func helpAsFlag(args []string, app *cli.App) []string {
	i := 1
	for i < len(args) && isFlagToken(args[i]) {
		i += flagTokens(args[i], args[i+1:], app.Flags)
	}
	if i+1 >= len(args) || args[i] != "help" {
		return args
	}
	return append(append(append([]string{}, args[:i]...), args[i+1:]...), "--help")
}
