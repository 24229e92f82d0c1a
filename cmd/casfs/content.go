package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/casfs/casfs/store"
)

func contentCommand() *cli.Command {
	return &cli.Command{
		Name:   "content",
		Usage:  "manage blobs in the content store",
		Action: subcommandsOf,
		Subcommands: concat([]*cli.Command{
			{
				Name: "ingest", Usage: "store stdin as a blob (resumable by REF)", ArgsUsage: "REF",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "expected-digest", Usage: "fail unless the content has this digest"},
					&cli.Int64Flag{Name: "expected-size", Usage: "fail unless the content has this many bytes"},
					quietFlag,
				},
				Action: contentIngest,
			},
			{Name: "ls", Usage: "list blobs", ArgsUsage: "[FILTER...]", Description: contentFilterHelp, Flags: []cli.Flag{quietFlag, formatFlag}, Action: contentList},
			{Name: "info", Usage: "show blobs' records as JSON, one object per DIGEST", ArgsUsage: "DIGEST...", Flags: []cli.Flag{jsonFormatFlag}, Action: contentInfo},
			{Name: "get", Usage: "write a blob to stdout", ArgsUsage: "DIGEST", Action: contentGet},
			{
				Name: "rm", Usage: "remove blobs (refused for a blob an image or lease needs, unless --force)", ArgsUsage: "DIGEST...",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "remove blobs that images or leases still need"}},
				Action: contentRemove,
			},
			{Name: "verify", Usage: "re-hash blobs (all when none named)", ArgsUsage: "[DIGEST...]", Action: contentVerify},
			{Name: "label", Usage: "set (key=value) or remove (key-) labels", ArgsUsage: "DIGEST LABEL...", Action: contentLabel},
			{Name: "active", Usage: "list in-progress ingests", Flags: []cli.Flag{quietFlag, formatFlag}, Action: contentActive},
			{Name: "export", Usage: "write blobs to a tar file (all when none named; - for stdout)", ArgsUsage: "FILE [DIGEST...]", Action: contentExport},
			{Name: "import", Usage: "read blobs from a tar file (- for stdin)", ArgsUsage: "FILE", Flags: []cli.Flag{quietFlag}, Action: contentImport},
			contentFetchCommand(),
		}, gcContentCommands()),
	}
}

func contentIngest(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	ref := c.Args().First()
	opts := store.IngestOptions{Size: c.Int64("expected-size")}
	if opts.Size < 0 {
		return usagef("--expected-size must not be negative")
	}
	if s := c.String("expected-digest"); s != "" {
		d, err := store.ParseDigest(s)
		if err != nil {
			return argError(err)
		}
		opts.Expected = d
	}
	if !c.Bool("quiet") {
		opts.Resumed = func(off int64) { fmt.Fprintf(c.App.ErrWriter, "resuming %s at %d bytes\n", ref, off) }
		opts.Restarted = func(stored, kept int64) {
			fmt.Fprintf(c.App.ErrWriter, "ingest %s: the input differs from the %d bytes stored after byte %d: started over from there\n", ref, stored, kept)
		}
	}
	return withContent(c, true, func(s store.Content) error {
		info, err := s.Ingest(c.Context, ref, c.App.Reader, opts)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.App.Writer, info.Digest)
		return nil
	})
}

func contentList(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	fs, err := parseFilters(c.Args().Slice())
	if err != nil {
		return err
	}
	if err := fs.check(func(p []string) bool { _, ok := contentField(store.ContentInfo{}, p); return ok || isLabelPath(p) }); err != nil {
		return err
	}
	return withContent(c, false, func(s store.Content) error {
		infos, err := s.ListContent(c.Context)
		if err != nil {
			return err
		}
		return listing[store.ContentInfo]{
			header: []string{"DIGEST", "SIZE", "AGE", "LABELS"},
			id:     func(i store.ContentInfo) string { return i.Digest.String() },
			row: func(i store.ContentInfo) []any {
				return []any{i.Digest, humanSize(i.Size), age(i.CreatedAt), formatLabels(i.Labels)}
			},
		}.print(c, format, filterItems(fs, infos, contentField))
	})
}

const contentFilterHelp = `FILTER is ctr's: field[==|!=|~=value], several clauses joined by commas must all hold, and a
blob matching any FILTER argument is listed. Fields: digest, size, mediatype, labels.KEY
(labels."KEY" for keys with dots). Example: casfs content ls 'labels."containerd.io/gc.root"'`

// contentField is a blob's value for a filter field.
func contentField(i store.ContentInfo, path []string) (string, bool) {
	switch strings.Join(path, ".") {
	case "digest":
		return i.Digest.String(), true
	case "size":
		return strconv.FormatInt(i.Size, 10), true
	case "mediatype":
		return i.MediaType, true
	}
	return labelField(i.Labels, path)
}

// digestArgs resolves every argument (full digest or unique prefix).
func digestArgs(c *cli.Context, s store.Content, args []string) ([]digest.Digest, error) {
	out := make([]digest.Digest, 0, len(args))
	for _, a := range args {
		d, err := s.ResolveDigest(c.Context, a)
		if err != nil {
			return nil, argError(err)
		}
		out = append(out, d)
	}
	return out, nil
}

func contentInfo(c *cli.Context) error {
	if err := wantArgs(c, 1, -1); err != nil {
		return err
	}
	if err := jsonFormat(c); err != nil {
		return err
	}
	return withContent(c, false, func(s store.Content) error {
		ds, err := digestArgs(c, s, c.Args().Slice())
		if err != nil {
			return err
		}
		for _, d := range ds {
			info, err := s.ContentInfo(c.Context, d)
			if err != nil {
				return err
			}
			if err := printJSON(c.App.Writer, info); err != nil {
				return err
			}
		}
		return nil
	})
}

func contentGet(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	return withContent(c, false, func(s store.Content) error {
		ds, err := digestArgs(c, s, c.Args().Slice())
		if err != nil {
			return err
		}
		return s.ReadContent(c.Context, ds[0], c.App.Writer)
	})
}

func contentRemove(c *cli.Context) error {
	if err := wantArgs(c, 1, -1); err != nil {
		return err
	}
	return withContentGC(c, false, func(s contentGC) error {
		ds, err := digestArgs(c, s, c.Args().Slice())
		if err != nil {
			return err
		}
		for _, d := range ds {
			remove := s.RemoveContent
			if c.Bool("force") {
				remove = s.ForceRemoveContent
			}
			if err := remove(c.Context, d); err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, d)
		}
		return nil
	})
}

func contentVerify(c *cli.Context) error {
	return withContent(c, false, func(s store.Content) error {
		ds, err := digestArgs(c, s, c.Args().Slice())
		if err != nil {
			return err
		}
		problems, err := s.VerifyContent(c.Context, ds)
		if err != nil {
			return err
		}
		for _, p := range problems {
			fmt.Fprintf(c.App.Writer, "%s: %s\n", p.Digest, p.Reason)
		}
		switch len(problems) {
		case 0:
			return nil
		case 1:
			return fmt.Errorf("verify: %s: %s", problems[0].Digest, problems[0].Reason)
		default:
			return fmt.Errorf("verify: %d blobs failed (listed above)", len(problems))
		}
	})
}

func contentLabel(c *cli.Context) error {
	if err := wantArgs(c, 2, -1); err != nil {
		return err
	}
	set, del, err := parseLabelArgs(c.Args().Slice()[1:])
	if err != nil {
		return err
	}
	return withContent(c, false, func(s store.Content) error {
		ds, err := digestArgs(c, s, c.Args().Slice()[:1])
		if err != nil {
			return err
		}
		info, err := s.LabelContent(c.Context, ds[0], set, del)
		if err != nil {
			return argError(err) // a label the store refuses is malformed input
		}
		fmt.Fprintln(c.App.Writer, formatLabels(info.Labels))
		return nil
	})
}

// parseLabelArgs reads the LABEL arguments of content label and image
// label: key=value sets, key- removes.
func parseLabelArgs(args []string) (set map[string]string, del []string, err error) {
	set = map[string]string{}
	for _, a := range args {
		switch k, v, ok := strings.Cut(a, "="); {
		case ok && k != "":
			set[k] = v
		case !ok && strings.HasSuffix(a, "-") && len(a) > 1:
			del = append(del, strings.TrimSuffix(a, "-"))
		default:
			return nil, nil, usagef("label %q: want key=value to set or key- to remove", a)
		}
	}
	return set, del, nil
}

func contentActive(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	return withContent(c, false, func(s store.Content) error {
		sts, err := s.ActiveIngests(c.Context)
		if err != nil {
			return err
		}
		return listing[store.IngestStatus]{
			header: []string{"REF", "OFFSET", "TOTAL", "STARTED", "UPDATED"},
			id:     func(st store.IngestStatus) string { return st.Ref },
			row: func(st store.IngestStatus) []any {
				total := "-"
				if st.Total > 0 {
					total = fmt.Sprint(st.Total)
				}
				return []any{st.Ref, st.Offset, total, age(st.StartedAt), age(st.UpdatedAt)}
			},
		}.print(c, format, sts)
	})
}

func contentExport(c *cli.Context) error {
	if err := wantArgs(c, 1, -1); err != nil {
		return err
	}
	return withContent(c, false, func(s store.Content) error {
		ds, err := digestArgs(c, s, c.Args().Slice()[1:])
		if err != nil {
			return err
		}
		return writeFileAtomic(c, c.Args().First(), func(w io.Writer) error {
			return s.ExportContent(c.Context, w, ds)
		})
	})
}

func contentImport(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	return withContent(c, true, func(s store.Content) error {
		return readFile(c, c.Args().First(), func(r io.Reader) error {
			infos, err := s.ImportContent(c.Context, r)
			if err != nil {
				return err
			}
			for _, i := range infos {
				fmt.Fprintln(c.App.Writer, i.Digest)
			}
			return nil
		})
	})
}

// writeFileAtomic writes to stdout for "-", else to a temporary file
// renamed into place only when fn succeeds, so a failed export leaves no
// half-written archive behind.
func writeFileAtomic(c *cli.Context, name string, fn func(io.Writer) error) error {
	if err := refuseTerminal(c, name); err != nil {
		return err
	}
	if name == "-" {
		return fn(c.App.Writer)
	}
	f, err := os.CreateTemp(dirOf(name), ".casfs-export-*")
	if err != nil {
		return fmt.Errorf("export to %s: %w", name, err)
	}
	defer os.Remove(f.Name())
	if err := fn(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export to %s: %w", name, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

func readFile(c *cli.Context, name string, fn func(io.Reader) error) error {
	if name == "-" {
		return fn(c.App.Reader)
	}
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, unwrapPathErr(err))
	}
	defer f.Close()
	return fn(f)
}

// refuseTerminal refuses to write an archive to stdout when stdout is a
// terminal, as docker and nerdctl do.
func refuseTerminal(c *cli.Context, name string) error {
	if name != "-" {
		return nil
	}
	if f, ok := c.App.Writer.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return usagef("refusing to write a tar archive to a terminal: redirect stdout or name a FILE")
	}
	return nil
}
