package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/fetch"
	"github.com/casfs/casfs/store"
)

var registryFlags = []cli.Flag{
	&cli.StringFlag{Name: "hosts-dir", EnvVars: []string{"CASFS_HOSTS_DIR"}, Usage: "registry host configuration, containerd's hosts.toml layout (default: the first of /etc/casfs/certs.d, /etc/containerd/certs.d, /etc/docker/certs.d that exists)"},
	&cli.StringFlag{Name: "config", EnvVars: []string{"CASFS_CONFIG"}, Usage: "containerd config.toml whose registry section to read (default " + fetch.DefaultRegistryConfig + " when it exists)"},
	&cli.BoolFlag{Name: "plain-http", Usage: "talk plain HTTP to the registry (loopback registries)"},
	&cli.BoolFlag{Name: "skip-verify", Aliases: []string{"k"}, Usage: "accept any TLS certificate of the registries (wins over hosts.toml's skip_verify)"},
	&cli.StringFlag{Name: "tlscacert", Usage: "trust the CA certificates in this PEM file (wins over hosts.toml's ca)"},
	&cli.StringFlag{Name: "tlscert", Usage: "TLS client certificate, PEM (wins over hosts.toml's client)"},
	&cli.StringFlag{Name: "tlskey", Usage: "key of --tlscert, PEM (default: in the --tlscert file)"},
	&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "registry credentials as user[:password]; the password is prompted when omitted and stdin is a terminal"},
	&cli.BoolFlag{Name: "debug", Usage: "log each registry request (--log-level debug)"},
	&cli.DurationFlag{Name: "progress-timeout", Usage: "fail a registry transfer that sends less than --progress-kib within this time (default 30s, or hosts.toml's progress_timeout)"},
	&cli.Int64Flag{Name: "progress-kib", Usage: "KiB a transfer must send within --progress-timeout (default 64, or hosts.toml's progress_bytes)"},
	&cli.DurationFlag{Name: "manifest-timeout", Usage: "bound resolving a name and fetching each manifest (default 60s, or hosts.toml's manifest_timeout)"},
}

var platformFlags = []cli.Flag{
	&cli.StringFlag{Name: "platform", Usage: "os/arch[/variant] to pull (default: this machine's)"},
	&cli.BoolFlag{Name: "all-platforms", Usage: "pull every platform of a multi-platform image"},
	&cli.IntFlag{Name: "max-concurrent-downloads", Value: 3, Usage: "blobs fetched at once"},
}

func imageCommand() *cli.Command {
	pullFlags := append(append(append([]cli.Flag{}, registryFlags...), platformFlags...),
		&cli.BoolFlag{Name: "no-unpack", Usage: "fetch and record only; do not unpack layers"},
		&cli.BoolFlag{Name: "lazy", Usage: "fetch manifests and configs only; layers are fetched on first read (eStargz layers file by file)"},
		&cli.BoolFlag{Name: "lazy-complete", Value: true, Usage: "with --lazy, let the mount fetch the rest of each eStargz layer in the background"},
		quietFlag)
	pullFlags = append(pullFlags, limitFlags()...)
	return &cli.Command{
		Name:   "image",
		Usage:  "manage images",
		Action: subcommandsOf,
		Subcommands: concat([]*cli.Command{
			{Name: "pull", Usage: "fetch an image from its registry and record it", ArgsUsage: "REF", Flags: pullFlags, Action: imagePull},
			{Name: "push", Usage: "send an image to a registry", ArgsUsage: "REF [REMOTE]",
				Flags: append(append([]cli.Flag{}, registryFlags...),
					&cli.StringFlag{Name: "platform", Usage: "push only this platform's manifest"},
					&cli.IntFlag{Name: "max-concurrent-uploads", Value: 3, Usage: "blobs sent at once"},
					quietFlag),
				Action: imagePush},
			{Name: "ls", Usage: "list images (platforms in parentheses are in the index but not local)", ArgsUsage: "[FILTER...]",
				Description: imageFilterHelp, Flags: []cli.Flag{quietFlag, formatFlag}, Action: imageList},
			{Name: "info", Usage: "show images' records, manifests and configs as JSON, one object per REF", ArgsUsage: "REF...",
				Flags: []cli.Flag{jsonFormatFlag, &cli.StringFlag{Name: "platform", Usage: "show this os/arch[/variant]'s manifest of an index (default: this machine's)"}}, Action: imageInfo},
			{Name: "tag", Usage: "give an image more names (an existing name is moved only with --force)", ArgsUsage: "SRC DST...",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "move names that already point at another image"}},
				Action: imageTag},
			{Name: "label", Usage: "set (key=value) or remove (key-) labels of an image", ArgsUsage: "REF LABEL...", Action: imageLabel},
			{
				Name: "convert", Usage: "make a copy of a local image with eStargz or zstd:chunked (lazily readable) or plain gzip layers", ArgsUsage: "SRC DST",
				Flags: append([]cli.Flag{
					&cli.BoolFlag{Name: "estargz", Usage: "eStargz layers, read file by file by image pull --lazy"},
					&cli.BoolFlag{Name: "zstdchunked", Usage: "zstd:chunked layers (eStargz's TOC with zstd frames), read file by file by image pull --lazy"},
					&cli.BoolFlag{Name: "oci", Usage: "plain gzip layers (converts a lazily readable image back)"},
					&cli.StringFlag{Name: "prioritized-files", Usage: "`FILE` listing paths (one a line) to put first in eStargz or zstd:chunked layers, fetched first by background completion"},
					quietFlag,
				}, append(append([]cli.Flag{}, registryFlags...), limitFlags()...)...),
				Action: imageConvert,
			},
			{Name: "rm", Usage: "remove image names", ArgsUsage: "REF...", Action: imageRemove},
		}, imageArchiveCommands(), gcImageCommands(), snapshotImageCommands()),
	}
}

// contentFetchCommand is `casfs content fetch REF`: all content of an image, no unpack, no record.
func contentFetchCommand() *cli.Command {
	return &cli.Command{
		Name: "fetch", Usage: "fetch all content of an image (no record, no unpack)", ArgsUsage: "REF",
		Flags:  append(append(append([]cli.Flag{}, registryFlags...), platformFlags...), quietFlag),
		Action: contentFetch,
	}
}

func registryOptions(c *cli.Context) (o store.RegistryOptions, err error) {
	if c.Bool("debug") && !slog.Default().Enabled(c.Context, slog.LevelDebug) {
		setLogLevel(c, slog.LevelDebug)
	}
	o = store.RegistryOptions{HostsDir: c.String("hosts-dir"), PlainHTTP: c.Bool("plain-http")}
	o.Deadlines.ProgressTimeout = c.Duration("progress-timeout")
	o.Deadlines.ProgressBytes = c.Int64("progress-kib") << 10
	o.Deadlines.ManifestTimeout = c.Duration("manifest-timeout")
	if o.Deadlines.ProgressTimeout < 0 || o.Deadlines.ProgressBytes < 0 || o.Deadlines.ManifestTimeout < 0 {
		return o, usagef("--progress-timeout, --progress-kib and --manifest-timeout must be positive")
	}
	if o.TLS, err = tlsOptions(c); err != nil {
		return o, err
	}
	if o.Config, err = registryConfig(c); err != nil {
		return o, err
	}
	if o.HostsDir == "" && o.Config != nil {
		o.HostsDir = o.Config.ConfigPath
	}
	if u := c.String("user"); u != "" {
		user, pass, err := credentials(c, u)
		if err != nil {
			return o, err
		}
		o.Username, o.Password = user, pass
	}
	return o, nil
}

// registryConfig reads the registry section of --config, or of the
// default file when it exists; a file with passwords that others may read
// gets a warning.
func registryConfig(c *cli.Context) (*fetch.RegistryConfig, error) {
	file := c.String("config")
	if file == "" {
		if _, err := os.Stat(fetch.DefaultRegistryConfig); err != nil {
			return nil, nil
		}
		file = fetch.DefaultRegistryConfig
	}
	cfg, warning, err := fetch.LoadRegistryConfig(file)
	if err != nil {
		return nil, err
	}
	if warning != "" {
		slog.Warn(warning)
	}
	return cfg, nil
}

// tlsOptions reads --skip-verify, --tlscacert, --tlscert and --tlskey; the
// files must exist (named as typed in the error) and travel as absolute
// paths, since a daemon in another directory may read them.
func tlsOptions(c *cli.Context) (fetch.TLSOptions, error) {
	t := fetch.TLSOptions{SkipVerify: c.Bool("skip-verify")}
	if c.String("tlskey") != "" && c.String("tlscert") == "" {
		return t, usagef("--tlskey needs --tlscert")
	}
	for _, f := range []struct {
		flag string
		dst  *string
	}{{"tlscacert", &t.CAFile}, {"tlscert", &t.CertFile}, {"tlskey", &t.KeyFile}} {
		p := c.String(f.flag)
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return t, usagef("--%s %s: %v", f.flag, p, errors.Unwrap(err))
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return t, usagef("--%s %s: %v", f.flag, p, err)
		}
		*f.dst = abs
	}
	return t, nil
}

func pullOptions(c *cli.Context) (store.PullOptions, error) {
	ro, err := registryOptions(c)
	if err != nil {
		return store.PullOptions{}, err
	}
	o := store.PullOptions{
		RegistryOptions: ro,
		Platform:        c.String("platform"),
		AllPlatforms:    c.Bool("all-platforms"),
		MaxConcurrent:   c.Int("max-concurrent-downloads"),
		NoUnpack:        c.Bool("no-unpack"),
		Lazy:            c.Bool("lazy"),
		NoComplete:      !c.Bool("lazy-complete"),
	}
	if o.Platform != "" && o.AllPlatforms {
		return o, usagef("--platform and --all-platforms exclude each other")
	}
	if o.MaxConcurrent < 1 {
		return o, usagef("--max-concurrent-downloads must be at least 1")
	}
	return o, nil
}

func imagePull(c *cli.Context) error {
	return fetchImage(c, "pull", func(s store.Images, ref string, opts store.PullOptions) (string, digest.Digest, error) {
		info, err := s.Pull(c.Context, ref, opts)
		return info.Name, info.Target.Digest, err
	})
}

func contentFetch(c *cli.Context) error {
	return fetchImage(c, "fetch", func(s store.Images, ref string, opts store.PullOptions) (string, digest.Digest, error) {
		desc, err := s.FetchContent(c.Context, ref, opts)
		return ref, desc.Digest, err
	})
}

// fetchImage is what pull and content fetch share: parse, show progress,
// call, print "NAME: DIGEST".
func fetchImage(c *cli.Context, verb string, call func(store.Images, string, store.PullOptions) (string, digest.Digest, error)) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	opts, err := pullOptions(c)
	if err != nil {
		return err
	}
	ref := c.Args().First()
	if err := checkRefs(ref); err != nil {
		return err
	}
	return withImages(c, true, func(s store.Images) error {
		if err := asCaller(c, s, &opts.RegistryOptions, refHosts(ref)); err != nil {
			return err
		}
		p := newProgress(c, verb+" "+ref)
		opts.Progress = p.Event
		name, d, err := call(s, ref, opts)
		p.Finish(err)
		if err != nil {
			return opError(verb, ref, err)
		}
		switch {
		case !c.Bool("quiet"):
			fmt.Fprintf(c.App.Writer, "%s: %s\n", name, d)
		case verb == "pull":
			fmt.Fprintln(c.App.Writer, name) // what image ls -q lists
		default:
			fmt.Fprintln(c.App.Writer, d) // what content ls -q lists
		}
		return nil
	})
}

func imagePush(c *cli.Context) error {
	if err := wantArgs(c, 1, 2); err != nil {
		return err
	}
	ro, err := registryOptions(c)
	if err != nil {
		return err
	}
	opts := store.PushOptions{RegistryOptions: ro, Platform: c.String("platform"), MaxConcurrent: c.Int("max-concurrent-uploads")}
	if opts.MaxConcurrent < 1 {
		return usagef("--max-concurrent-uploads must be at least 1")
	}
	ref, remote := c.Args().Get(0), c.Args().Get(1)
	if err := checkRefs(c.Args().Slice()...); err != nil {
		return err
	}
	return withImages(c, false, func(s store.Images) error {
		// The target's registry: REMOTE's, or REF's when REMOTE is not given.
		if err := asCaller(c, s, &opts.RegistryOptions, refHosts(c.Args().Get(c.NArg()-1))); err != nil {
			return err
		}
		p := newProgress(c, "push "+ref)
		opts.Progress = p.Event
		err := s.Push(c.Context, ref, remote, opts)
		p.Finish(err)
		if err != nil {
			return opError("push", ref, err)
		}
		return nil
	})
}

func imageList(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	fs, err := parseFilters(c.Args().Slice())
	if err != nil {
		return err
	}
	if err := fs.check(func(p []string) bool { _, ok := imageField(store.ImageInfo{}, p); return ok || isLabelPath(p) }); err != nil {
		return err
	}
	return withImages(c, false, func(s store.Images) error {
		imgs, err := s.ListImages(c.Context)
		if err != nil {
			return err
		}
		return listing[store.ImageInfo]{
			header: []string{"REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"},
			id:     func(i store.ImageInfo) string { return i.Name },
			row: func(i store.ImageInfo) []any {
				platforms := i.Platforms
				for _, p := range i.RemotePlatforms {
					platforms = append(platforms, "("+p+")")
				}
				ps := strings.Join(platforms, ",")
				if ps == "" {
					ps = "-"
				}
				return []any{i.Name, i.Target.MediaType, i.Target.Digest, humanSize(i.Size), ps, formatLabels(i.Labels)}
			},
		}.print(c, format, filterItems(fs, imgs, imageField))
	})
}

const imageFilterHelp = `FILTER is ctr's: field[==|!=|~=value], several clauses joined by commas must all hold, and an
image matching any FILTER argument is listed. Fields: name, target.digest, target.mediatype,
labels.KEY (labels."KEY" for keys with dots); ~= takes a regular expression, and a field alone
means it is set. Example: casfs image ls 'name~=^docker.io/' 'labels."env"==prod'`

// imageField is an image's value for a filter field.
func imageField(i store.ImageInfo, path []string) (string, bool) {
	switch strings.Join(path, ".") {
	case "name":
		return i.Name, true
	case "target.digest":
		return i.Target.Digest.String(), true
	case "target.mediatype":
		return i.Target.MediaType, true
	}
	return labelField(i.Labels, path)
}

func imageInfo(c *cli.Context) error {
	if err := wantArgs(c, 1, -1); err != nil {
		return err
	}
	if err := jsonFormat(c); err != nil {
		return err
	}
	return withImages(c, false, func(s store.Images) error {
		for _, ref := range c.Args().Slice() {
			d, err := s.GetImage(c.Context, ref, c.String("platform"))
			if err != nil {
				return argError(err)
			}
			if err := printJSON(c.App.Writer, d); err != nil {
				return err
			}
		}
		return nil
	})
}

func imageTag(c *cli.Context) error {
	if err := wantArgs(c, 2, -1); err != nil {
		return err
	}
	if err := checkRefs(c.Args().Slice()...); err != nil {
		return err
	}
	dsts := make([]string, 0, c.NArg()-1)
	for _, d := range c.Args().Slice()[1:] {
		name, _ := store.NormalizeName(d)
		dsts = append(dsts, name)
	}
	return withImages(c, false, func(s store.Images) error {
		src, err := s.GetImage(c.Context, c.Args().First(), "")
		if err != nil {
			return argError(err)
		}
		if !c.Bool("force") {
			// Like ctr: a name that already points at another image is
			// only moved on request.
			for _, d := range dsts {
				old, err := s.GetImage(c.Context, d, "")
				if err == nil && old.Target.Digest != src.Target.Digest {
					return fmt.Errorf("tag %s: %w: it names %s (use --force to move it)", d, errdefs.ErrExists, old.Target.Digest)
				}
			}
		}
		if err := s.TagImage(c.Context, src.Name, dsts); err != nil {
			return argError(err)
		}
		for _, d := range dsts {
			fmt.Fprintln(c.App.Writer, d)
		}
		return nil
	})
}

func imageConvert(c *cli.Context) error {
	if err := wantArgs(c, 2, 2); err != nil {
		return err
	}
	n := 0
	for _, f := range []string{"estargz", "zstdchunked", "oci"} {
		if c.Bool(f) {
			n++
		}
	}
	if n != 1 {
		return usagef("image convert: give one of --estargz, --zstdchunked and --oci")
	}
	ro, err := registryOptions(c)
	if err != nil {
		return err
	}
	opts := store.ConvertOptions{EStargz: c.Bool("estargz"), ZstdChunked: c.Bool("zstdchunked"), RegistryOptions: ro}
	if p := c.String("prioritized-files"); p != "" {
		if !opts.EStargz && !opts.ZstdChunked {
			return usagef("image convert: --prioritized-files goes with --estargz or --zstdchunked")
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("image convert: prioritized files: %w", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				opts.PrioritizedFiles = append(opts.PrioritizedFiles, l)
			}
		}
	}
	return withImages(c, true, func(s store.Images) error {
		// Layers of a lazily pulled image come from their registries.
		if err := asCaller(c, s, &opts.RegistryOptions, sourceHosts(c, s)); err != nil {
			return err
		}
		info, err := s.ConvertImage(c.Context, c.Args().Get(0), c.Args().Get(1), opts)
		if err != nil {
			return argError(err)
		}
		if c.Bool("quiet") {
			fmt.Fprintln(c.App.Writer, info.Name)
			return nil
		}
		fmt.Fprintf(c.App.Writer, "%s %s\n", info.Name, info.Target.Digest)
		return nil
	})
}

func imageRemove(c *cli.Context) error {
	if err := wantArgs(c, 1, -1); err != nil {
		return err
	}
	// Every name is checked before any is removed.
	if err := checkRefs(c.Args().Slice()...); err != nil {
		return err
	}
	return withImages(c, false, func(s store.Images) error {
		for _, ref := range c.Args().Slice() {
			if _, err := s.GetImage(c.Context, ref, ""); err != nil {
				return argError(err)
			}
		}
		for _, ref := range c.Args().Slice() {
			if err := s.RemoveImage(c.Context, ref); err != nil {
				return argError(err)
			}
			fmt.Fprintln(c.App.Writer, ref)
		}
		return nil
	})
}

// checkRefs refuses malformed image references as usage errors before any
// work starts; what the registry or hosts.toml say later is not misuse.
func checkRefs(refs ...string) error {
	for _, r := range refs {
		if _, err := store.NormalizeName(r); err != nil {
			return argError(err)
		}
	}
	return nil
}

// opError names the operation and the reference once: the layers below
// often name the reference already (as typed or normalised).
func opError(verb, ref string, err error) error {
	msg := err.Error()
	name, _ := store.NormalizeName(ref)
	if !strings.Contains(msg, ref) && (name == "" || !strings.Contains(msg, name)) {
		return fmt.Errorf("%s %s: %w", verb, ref, err)
	}
	if strings.HasPrefix(msg, verb+" ") {
		return err
	}
	return fmt.Errorf("%s: %w", verb, err)
}

func imageLabel(c *cli.Context) error {
	if err := wantArgs(c, 2, -1); err != nil {
		return err
	}
	ref := c.Args().First()
	if err := checkRefs(ref); err != nil {
		return err
	}
	set, del, err := parseLabelArgs(c.Args().Slice()[1:])
	if err != nil {
		return err
	}
	return withImages(c, false, func(s store.Images) error {
		info, err := s.LabelImage(c.Context, ref, set, del)
		if err != nil {
			if errors.Is(err, errdefs.ErrInvalidArgument) {
				return argError(err) // a label the store refuses is malformed input
			}
			return opError("label", ref, err)
		}
		fmt.Fprintln(c.App.Writer, formatLabels(info.Labels))
		return nil
	})
}
