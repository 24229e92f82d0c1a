package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/daemon"
	"github.com/casfs/casfs/serve"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve the store as a read-only OCI registry (and the store API) until SIGTERM",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Value: serve.DefaultAddr, Usage: "listen on HOST:PORT"},
			&cli.DurationFlag{Name: "fetch-timeout", Value: 60 * time.Second, Usage: "bound on fetching a blob that is recorded but not local"},
			&cli.StringFlag{Name: "hosts-dir", Value: "/etc/casfs/certs.d", EnvVars: []string{"CASFS_HOSTS_DIR"}, Usage: "registry host configuration for fetching blobs that are not local"},
		}, serveTLSFlags()...),
		Action: func(c *cli.Context) error {
			if err := wantArgs(c, 0, 0); err != nil {
				return err
			}
			lc, err := serveListenConfig(c, c.String("addr"))
			if err != nil {
				return err
			}
			cfg := daemon.Config{Root: c.String("root"), Serve: &lc, FetchTimeout: c.Duration("fetch-timeout")}
			cfg.Registry.HostsDir = c.String("hosts-dir")
			return runForeground(c, cfg, 0)
		},
	}
}

// serveTLSFlags are how serve and mount --serve secure the registry.
func serveTLSFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "tls-cert", Usage: "serve HTTPS with this PEM certificate (with --tls-key)"},
		&cli.StringFlag{Name: "tls-key", Usage: "the PEM key of --tls-cert"},
		&cli.StringFlag{Name: "tls-client-ca", Usage: "require client certificates signed by this PEM CA (mTLS)"},
		&cli.BoolFlag{Name: "insecure", Usage: "allow plain HTTP on an address other than loopback"},
	}
}

// serveListenConfig reads the registry flags; a bad combination is misuse.
func serveListenConfig(c *cli.Context, addr string) (serve.ListenConfig, error) {
	lc := serve.ListenConfig{
		Addr: addr, TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"),
		ClientCA: c.String("tls-client-ca"), Insecure: c.Bool("insecure"),
	}
	if err := lc.Check(); err != nil {
		return lc, argError(err)
	}
	return lc, nil
}

// serveArgs turns a registry config back into flags for a background child.
func serveArgs(lc *serve.ListenConfig) []string {
	if lc == nil {
		return nil
	}
	args := []string{"--serve", lc.Addr}
	for _, f := range [][2]string{{"--tls-cert", lc.TLSCert}, {"--tls-key", lc.TLSKey}, {"--tls-client-ca", lc.ClientCA}} {
		if f[1] != "" {
			args = append(args, f[0], f[1])
		}
	}
	if lc.Insecure {
		args = append(args, "--insecure")
	}
	return args
}

// printListening tells the user where the registry answers.
func printListening(c *cli.Context) func(string) {
	return func(url string) { fmt.Fprintf(c.App.Writer, "serving the store as a registry on %s\n", url) }
}
