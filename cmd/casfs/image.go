package main

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/store"
)

var registryFlags = []cli.Flag{
	&cli.StringFlag{Name: "hosts-dir", Value: "/etc/casfs/certs.d", EnvVars: []string{"CASFS_HOSTS_DIR"}, Usage: "registry host configuration (containerd's hosts.toml layout)"},
	&cli.BoolFlag{Name: "plain-http", Usage: "talk plain HTTP to the registry (loopback registries)"},
	&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "registry credentials as user[:password]; the password is prompted when omitted and stdin is a terminal"},
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
		&cli.BoolFlag{Name: "lazy", Usage: "fetch manifests and configs only; layers are fetched on first read"},
		quietFlag)
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
			{Name: "ls", Usage: "list images", Flags: []cli.Flag{quietFlag, formatFlag}, Action: imageList},
			{Name: "info", Usage: "show an image's descriptor, manifest and config as JSON", ArgsUsage: "REF", Action: imageInfo},
			{Name: "tag", Usage: "give an image more names", ArgsUsage: "SRC DST...", Action: imageTag},
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

func registryOptions(c *cli.Context) (store.RegistryOptions, error) {
	o := store.RegistryOptions{HostsDir: c.String("hosts-dir"), PlainHTTP: c.Bool("plain-http")}
	o.Deadlines.ProgressTimeout = c.Duration("progress-timeout")
	o.Deadlines.ProgressBytes = c.Int64("progress-kib") << 10
	o.Deadlines.ManifestTimeout = c.Duration("manifest-timeout")
	if o.Deadlines.ProgressTimeout < 0 || o.Deadlines.ProgressBytes < 0 || o.Deadlines.ManifestTimeout < 0 {
		return o, usagef("--progress-timeout, --progress-kib and --manifest-timeout must be positive")
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
	return fetchImage(c, "pull", func(s store.API, ref string, opts store.PullOptions) (string, digest.Digest, error) {
		info, err := s.Pull(c.Context, ref, opts)
		return info.Name, info.Target.Digest, err
	})
}

func contentFetch(c *cli.Context) error {
	return fetchImage(c, "fetch", func(s store.API, ref string, opts store.PullOptions) (string, digest.Digest, error) {
		desc, err := s.FetchContent(c.Context, ref, opts)
		return ref, desc.Digest, err
	})
}

// fetchImage is what pull and content fetch share: parse, show progress,
// call, print "NAME: DIGEST".
func fetchImage(c *cli.Context, verb string, call func(store.API, string, store.PullOptions) (string, digest.Digest, error)) error {
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
	return withStore(c, true, func(s store.API) error {
		p := newProgress(c, verb+" "+ref)
		opts.Progress = p.Event
		name, d, err := call(s, ref, opts)
		p.Finish(err)
		if err != nil {
			return fmt.Errorf("%s %s: %w", verb, ref, err)
		}
		if !c.Bool("quiet") {
			fmt.Fprintf(c.App.Writer, "%s: %s\n", name, d)
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
	return withStore(c, false, func(s store.API) error {
		p := newProgress(c, "push "+ref)
		opts.Progress = p.Event
		err := s.Push(c.Context, ref, remote, opts)
		p.Finish(err)
		if err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		return nil
	})
}

func imageList(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if err := wantArgs(c, 0, 0); err != nil {
		return err
	}
	return withStore(c, false, func(s store.API) error {
		imgs, err := s.ListImages(c.Context)
		if err != nil {
			return err
		}
		return listing[store.ImageInfo]{
			header: []string{"REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS"},
			id:     func(i store.ImageInfo) string { return i.Name },
			row: func(i store.ImageInfo) []any {
				platforms := strings.Join(i.Platforms, ",")
				if platforms == "" {
					platforms = "-"
				}
				return []any{i.Name, i.Target.MediaType, i.Target.Digest, humanSize(i.Size), platforms}
			},
		}.print(c, format, imgs)
	})
}

func imageInfo(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	return withStore(c, false, func(s store.API) error {
		d, err := s.GetImage(c.Context, c.Args().First())
		if err != nil {
			return argError(err)
		}
		return printJSON(c.App.Writer, d)
	})
}

func imageTag(c *cli.Context) error {
	if err := wantArgs(c, 2, -1); err != nil {
		return err
	}
	return withStore(c, false, func(s store.API) error {
		if err := s.TagImage(c.Context, c.Args().First(), c.Args().Slice()[1:]); err != nil {
			return argError(err)
		}
		for _, d := range c.Args().Slice()[1:] {
			fmt.Fprintln(c.App.Writer, d)
		}
		return nil
	})
}

func imageRemove(c *cli.Context) error {
	if err := wantArgs(c, 1, -1); err != nil {
		return err
	}
	return withStore(c, false, func(s store.API) error {
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
