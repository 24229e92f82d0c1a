package fetch

import (
	"context"
	"log/slog"
	"maps"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// CallerConfig is the registry configuration of the calling process, made
// to travel with a request that another process (the mount daemon) runs
// for it: cfg (config.toml's registry section, nil for none) with, for each
// registry namespace in hosts and every endpoint that hosts.toml (in
// hostsDir, "" for the caller's default) or cfg lists for it, the caller's
// docker credentials (config.json of $DOCKER_CONFIG or ~/.docker, and its
// helpers) where cfg has none. It returns the hosts directory the caller
// reads, its default resolved here. The result is marked Caller, so that
// the process using it never falls back to its own credentials or hosts
// directory.
func CallerConfig(ctx context.Context, cfg *RegistryConfig, hostsDir string, plainHTTP bool, hosts []string) (*RegistryConfig, string) {
	out := &RegistryConfig{Caller: true}
	if cfg != nil {
		out.ConfigPath, out.Mirrors, out.Hosts = cfg.ConfigPath, cfg.Mirrors, maps.Clone(cfg.Hosts)
	}
	if out.Hosts == nil {
		out.Hosts = map[string]HostAuthTLS{}
	}
	if hostsDir == "" {
		hostsDir = defaultHostsDir()
	}
	docker := dockerCredential()
	seen := map[string]bool{}
	for _, ns := range hosts {
		// Every endpoint the operation may contact: mirrors, then the server.
		targets := []string{ns}
		if eps, err := loadEndpoints(hostsDir, ns, hostsOptions{PlainHTTP: plainHTTP, Config: cfg}); err == nil {
			for _, ep := range eps {
				targets = append(targets, ep.URL.Host)
			}
		} else {
			slog.Debug("caller credentials: endpoints unknown, the operation will say why", "host", ns, "err", err)
		}
		for _, h := range targets {
			if seen[h] {
				continue
			}
			seen[h] = true
			if _, ok := out.credential(h); ok {
				continue
			}
			lookup := h
			if h == "docker.io" {
				lookup = "registry-1.docker.io"
			}
			cred, err := docker(ctx, lookup)
			if err != nil || cred == auth.EmptyCredential {
				continue
			}
			e := out.Hosts[h]
			e.Username, e.Password, e.IdentityToken = cred.Username, cred.Password, cred.RefreshToken
			out.Hosts[h] = e
		}
	}
	return out, hostsDir
}
