package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/archive"
	"github.com/casfs/casfs/store"
)

// imageArchiveCommands are `image export` and `image import`.
func imageArchiveCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "export",
			Usage:     "write images to an OCI image layout tar with docker's manifest.json (- for stdout)",
			ArgsUsage: "FILE REF...",
			Flags: append(append([]cli.Flag{}, registryFlags...),
				&cli.StringFlag{Name: "platform", Usage: "export only this os/arch[/variant] (default: this machine's)"},
				&cli.BoolFlag{Name: "all-platforms", Usage: "export every platform of multi-platform images"},
				&cli.BoolFlag{Name: "skip-docker-manifest", Usage: "leave out docker's manifest.json"},
				&cli.BoolFlag{Name: "local-only", Usage: "refuse images with blobs that are not local instead of fetching them"},
			),
			Action: imageExport,
		},
		{
			Name:      "import",
			Usage:     "read images from an OCI layout or docker-archive tar, or an OCI layout directory (- for stdin)",
			ArgsUsage: "FILE",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "base-name", Usage: "image name for entries named only by a tag"},
				&cli.BoolFlag{Name: "digests", Usage: "also record <repository>@<digest> names"},
				&cli.BoolFlag{Name: "no-unpack", Usage: "store and record only; do not unpack layers"},
			},
			Action: imageImport,
		},
	}
}

func imageExport(c *cli.Context) error {
	if err := wantArgs(c, 2, -1); err != nil {
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
	file, refs := c.Args().First(), c.Args().Slice()[1:]
	return withStore(c, false, func(s store.API) error {
		return writeFileAtomic(c, file, func(w io.Writer) error {
			return argError(s.ExportImages(c.Context, w, refs, opts))
		})
	})
}

func imageImport(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	opts := store.ImportOptions{BaseName: c.String("base-name"), Digests: c.Bool("digests"), NoUnpack: c.Bool("no-unpack")}
	if opts.BaseName != "" {
		if _, err := store.NormalizeName(opts.BaseName); err != nil {
			return usagef("--base-name: %v", err)
		}
	}
	name := c.Args().First()
	return withStore(c, true, func(s store.API) error {
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
