package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/store"
)

// checkTopCommands is `check`.
func checkTopCommands() []*cli.Command {
	return []*cli.Command{{
		Name:  "check",
		Usage: "verify the whole store (blobs, records, images, snapshots, ingests, mounts); exit 1 on any problem",
		Description: "Prints one line per finding: 'problem:' (exit status 1), 'repaired:' (what --repair did) and\n" +
			"'note:' (fine by design: blobs not local yet, resumable ingests, work in progress).\n" +
			"--repair fixes what can be fixed without losing data and exits 0 when nothing is left.",
		Flags: append(append([]cli.Flag{}, registryFlags...),
			&cli.BoolFlag{Name: "repair", Usage: "fix what can be fixed without losing data (re-fetches corrupt blobs from their registry)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print problems and repairs only, no notes"},
			formatFlag),
		Action: checkStore,
	}}
}

func checkStore(c *cli.Context) error {
	if err := wantArgs(c, 0, 0); err != nil {
		return err
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	ro, err := registryOptions(c)
	if err != nil {
		return err
	}
	opts := store.StoreCheckOptions{Repair: c.Bool("repair"), RegistryOptions: ro}
	return withChecker(c, false, func(s store.Checker) error {
		if opts.Repair {
			if err := asCaller(c, s, &opts.RegistryOptions, sourceHosts(c, s)); err != nil {
				return err
			}
		}
		rep, err := s.Check(c.Context, opts)
		if err != nil {
			return fmt.Errorf("check: %w", err)
		}
		if format == "json" {
			if err := printJSON(c.App.Writer, rep); err != nil {
				return err
			}
		} else {
			printCheck(c, rep)
		}
		switch n := len(rep.Problems); {
		case n == 0:
			return nil
		case opts.Repair:
			return fmt.Errorf("check: %d problem(s) could not be repaired (listed above)", n)
		default:
			return fmt.Errorf("check: %d problem(s) found (listed above; --repair fixes what it can)", n)
		}
	})
}

func printCheck(c *cli.Context, rep store.StoreCheckReport) {
	w := c.App.Writer
	for _, f := range rep.Problems {
		fmt.Fprintln(w, "problem:", f)
	}
	for _, f := range rep.Repaired {
		fmt.Fprintln(w, "repaired:", f)
	}
	if !c.Bool("quiet") {
		for _, f := range rep.Notes {
			fmt.Fprintln(w, "note:", f)
		}
	}
	n := rep.Checked
	fmt.Fprintf(w, "checked %d blob records, %d blob files, %d images, %d snapshots, %d ingests, %d mounts: %d problems, %d repaired\n",
		n.Blobs, n.Files, n.Images, n.Snapshots, n.Ingests, n.Mounts, len(rep.Problems), len(rep.Repaired))
}
