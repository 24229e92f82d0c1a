package main

import (
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/store"
)

// snapshotTopCommands is `snapshot`; snapshotImageCommands are
// `image mount`, `image unmount` and `image check`.
func snapshotTopCommands() []*cli.Command {
	return []*cli.Command{{
		Name:    "snapshot",
		Aliases: []string{"snapshots"},
		Usage:   "manage the layer snapshots images are unpacked into",
		Action:  subcommandsOf,
		Subcommands: []*cli.Command{
			{Name: "ls", Usage: "list snapshots: key, parent, kind", Flags: []cli.Flag{quietFlag, formatFlag}, Action: snapshotList},
			{Name: "rm", Usage: "remove snapshots (refused while others are based on them)", ArgsUsage: "KEY...", Action: snapshotRemove},
			{Name: "usage", Usage: "disk use of snapshots (of one when KEY is given)", ArgsUsage: "[KEY]", Flags: []cli.Flag{formatFlag}, Action: snapshotUsage},
			snapshotPruneCommand(),
		},
	}}
}

func snapshotImageCommands() []*cli.Command {
	return []*cli.Command{
		{Name: "mount", Usage: "mount an image's layers at TARGET with overlayfs (read-only unless --rw)", ArgsUsage: "REF TARGET",
			Flags:  append([]cli.Flag{&cli.BoolFlag{Name: "rw", Usage: "add a writable snapshot on top, kept until image unmount --rm"}}, limitFlags()...),
			Action: imageMount},
		{Name: "unmount", Aliases: []string{"umount"}, Usage: "unmount what image mount mounted at TARGET", ArgsUsage: "TARGET",
			Flags:  []cli.Flag{&cli.BoolFlag{Name: "rm", Usage: "also remove the writable snapshot"}},
			Action: imageUnmount},
		{Name: "check", Usage: "check that an image's blobs are local, its layers unpacked and their diff IDs right", ArgsUsage: "REF",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "verify-diffs", Usage: "re-read every layer and hash it, instead of trusting the diff IDs recorded at unpack"},
				formatFlag,
			},
			Action: imageCheck},
	}
}

func snapshotList(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if err := wantArgs(c, 0, 0); err != nil {
		return err
	}
	return withSnapshots(c, false, func(s store.Snapshots) error {
		snaps, err := s.ListSnapshots(c.Context)
		if err != nil {
			return err
		}
		return listing[store.SnapshotInfo]{
			header: []string{"KEY", "PARENT", "KIND"},
			id:     func(sn store.SnapshotInfo) string { return sn.Key },
			row:    func(sn store.SnapshotInfo) []any { return []any{sn.Key, sn.Parent, sn.Kind} },
		}.print(c, format, snaps)
	})
}

func snapshotRemove(c *cli.Context) error {
	if err := wantArgs(c, 1, -1); err != nil {
		return err
	}
	return withSnapshots(c, false, func(s store.Snapshots) error {
		for _, key := range c.Args().Slice() {
			if err := s.RemoveSnapshot(c.Context, key); err != nil {
				return argError(err)
			}
			fmt.Fprintln(c.App.Writer, key)
		}
		return nil
	})
}

func snapshotUsage(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if err := wantArgs(c, 0, 1); err != nil {
		return err
	}
	return withSnapshots(c, false, func(s store.Snapshots) error {
		us, err := s.SnapshotUsage(c.Context, c.Args().First())
		if err != nil {
			return argError(err)
		}
		if format == "json" {
			if us == nil {
				us = []store.SnapshotUsage{}
			}
			return printJSON(c.App.Writer, us)
		}
		tw := newTable(c.App.Writer, "KEY", "SIZE", "INODES")
		for _, u := range us {
			row(tw, u.Key, humanSize(u.Size), u.Inodes)
		}
		return tw.Flush()
	})
}

// absTarget makes TARGET absolute here: the daemon that mounts it has
// another working directory.
func absTarget(p string) (string, error) {
	if p == "" {
		return "", usagef("TARGET must not be empty")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("target %s: %w", p, err)
	}
	return abs, nil
}

func imageMount(c *cli.Context) error {
	if err := wantArgs(c, 2, 2); err != nil {
		return err
	}
	ref := c.Args().Get(0)
	target, err := absTarget(c.Args().Get(1))
	if err != nil {
		return err
	}
	return withSnapshots(c, false, func(s store.Snapshots) error {
		m, err := s.MountImage(c.Context, ref, target, store.MountOptions{ReadWrite: c.Bool("rw")})
		if err != nil {
			return argError(err)
		}
		fmt.Fprintln(c.App.Writer, m.Target)
		return nil
	})
}

func imageUnmount(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	target, err := absTarget(c.Args().First())
	if err != nil {
		return err
	}
	return withSnapshots(c, false, func(s store.Snapshots) error {
		m, err := s.UnmountImage(c.Context, target, c.Bool("rm"))
		if err != nil {
			return argError(err)
		}
		fmt.Fprintln(c.App.Writer, m.Target)
		return nil
	})
}

func imageCheck(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	ref := c.Args().First()
	return withSnapshots(c, false, func(s store.Snapshots) error {
		rep, err := s.CheckImage(c.Context, ref, store.CheckOptions{VerifyDiffs: c.Bool("verify-diffs")})
		if err != nil {
			return fmt.Errorf("check %s: %w", ref, argError(err))
		}
		if format == "json" {
			if err := printJSON(c.App.Writer, rep); err != nil {
				return err
			}
		} else {
			for _, p := range rep.Problems {
				fmt.Fprintf(c.App.Writer, "%s: %s\n", p.Digest, p.Reason)
			}
		}
		if n := len(rep.Problems); n > 0 {
			return fmt.Errorf("check %s: %d problem(s) found", rep.Image, n)
		}
		if format != "json" {
			fmt.Fprintf(c.App.Writer, "%s: ok (manifest %s, %d blobs present, %d layers unpacked)\n", rep.Image, rep.Manifest, rep.Blobs, rep.Layers)
		}
		return nil
	})
}
