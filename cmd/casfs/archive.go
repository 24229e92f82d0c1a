package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/archive"
	"github.com/casfs/casfs/store"
)

func exportFlags() []cli.Flag {
	return append(append([]cli.Flag{}, registryFlags...),
		&cli.StringFlag{Name: "platform", Usage: "export only this os/arch[/variant] (default: this machine's)"},
		&cli.BoolFlag{Name: "all-platforms", Usage: "export every platform of multi-platform images"},
		&cli.BoolFlag{Name: "skip-docker-manifest", Usage: "leave out docker's manifest.json"},
		&cli.BoolFlag{Name: "local-only", Usage: "refuse images with blobs that are not local instead of fetching them"},
	)
}

func importFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "base-name", Usage: "image name for entries named only by a tag"},
		&cli.BoolFlag{Name: "digests", Usage: "also record <repository>@<digest> names"},
		&cli.BoolFlag{Name: "no-unpack", Usage: "store and record only; do not unpack layers"},
	}, limitFlags()...)
}

// imageArchiveCommands are `image export` and `image import`.
func imageArchiveCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "export",
			Usage:     "write images to an OCI image layout tar with docker's manifest.json (- for stdout)",
			ArgsUsage: "FILE REF...",
			Flags:     exportFlags(),
			Action: func(c *cli.Context) error {
				if err := wantArgs(c, 2, -1); err != nil {
					return err
				}
				return imageExport(c, c.Args().First(), c.Args().Slice()[1:])
			},
		},
		{
			Name:      "import",
			Usage:     "read images from an OCI layout or docker-archive tar, or an OCI layout directory (- for stdin)",
			ArgsUsage: "FILE",
			Flags:     importFlags(),
			Action: func(c *cli.Context) error {
				if err := wantArgs(c, 1, 1); err != nil {
					return err
				}
				return imageImport(c, c.Args().First())
			},
		},
	}
}

// archiveTopCommands are nerdctl's `save -o FILE REF...` and `load -i FILE`:
// image export and import under the names docker users type.
func archiveTopCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "save",
			Usage:     "image export with nerdctl's arguments: save [-o FILE] REF... (stdout without -o)",
			ArgsUsage: "REF...",
			Flags: append(exportFlags(),
				&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "-", Usage: "the archive to write"}),
			Action: func(c *cli.Context) error {
				if err := wantArgs(c, 1, -1); err != nil {
					return err
				}
				return imageExport(c, c.String("output"), c.Args().Slice())
			},
		},
		{
			Name:  "load",
			Usage: "image import with nerdctl's arguments: load [-i FILE] (stdin without -i)",
			Flags: append(importFlags(),
				&cli.StringFlag{Name: "input", Aliases: []string{"i"}, Value: "-", Usage: "the archive to read"}),
			Action: func(c *cli.Context) error {
				if err := wantArgs(c, 0, 0); err != nil {
					return err
				}
				return imageImport(c, c.String("input"))
			},
		},
	}
}

func imageExport(c *cli.Context, file string, refs []string) error {
	if err := checkRefs(refs...); err != nil {
		return err
	}
	if err := refuseTerminal(c, file); err != nil {
		return err
	}
	ro, err := registryOptions(c)
	if err != nil {
		return err
	}
	opts := store.ExportOptions{
		RegistryOptions:    ro,
		Platform:           c.String("platform"),
		AllPlatforms:       c.Bool("all-platforms"),
		SkipDockerManifest: c.Bool("skip-docker-manifest"),
		LocalOnly:          c.Bool("local-only"),
	}
	if opts.Platform != "" && opts.AllPlatforms {
		return usagef("--platform and --all-platforms exclude each other")
	}
	return withArchives(c, false, func(s store.Archives) error {
		if !opts.LocalOnly {
			// Blobs of lazily pulled images come from their registries.
			if err := asCaller(c, s, &opts.RegistryOptions, sourceHosts(c, s)); err != nil {
				return err
			}
		}
		return writeFileAtomic(c, file, func(w io.Writer) error {
			return argError(s.ExportImages(c.Context, w, refs, opts))
		})
	})
}

func imageImport(c *cli.Context, name string) error {
	opts := store.ImportOptions{BaseName: c.String("base-name"), Digests: c.Bool("digests"), NoUnpack: c.Bool("no-unpack")}
	if opts.BaseName != "" {
		if _, err := store.NormalizeName(opts.BaseName); err != nil {
			return usagef("--base-name: %v", err)
		}
	}
	return withArchives(c, true, func(s store.Archives) error {
		do := func(r io.Reader) error {
			// A bad archive is a failed operation (exit 1), not misuse,
			// though the store classes it as an invalid argument.
			imgs, err := s.ImportImages(c.Context, r, opts)
			if err != nil {
				return err
			}
			for _, i := range imgs {
				fmt.Fprintln(c.App.Writer, i.Name)
			}
			return nil
		}
		if fi, err := os.Stat(name); err == nil && fi.IsDir() {
			// An OCI layout directory goes through the same checked path
			// as an archive: stream it as a tar.
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(archive.TarDir(c.Context, name, pw)) }()
			err := do(pr)
			pr.CloseWithError(io.ErrClosedPipe)
			return err
		}
		return readFile(c, name, do)
	})
}
