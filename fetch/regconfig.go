package fetch

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/casfs/casfs/errdefs"
)

// DefaultRegistryConfig is read when no config file is named; it need not exist.
const DefaultRegistryConfig = "/etc/casfs/config.toml"

// RegistryConfig is the registry section of containerd's config.toml
// (`[plugins."io.containerd.grpc.v1.cri".registry]`, or containerd 2's
// `[plugins."io.containerd.cri.v1.images".registry]`), as read by the
// command that needs it. It travels to a daemon with the request, so its
// fields carry JSON names; it holds secrets and is never logged.
type RegistryConfig struct {
	// ConfigPath is the hosts.toml directory (config_path).
	ConfigPath string `json:"configPath,omitempty"`
	// Mirrors are mirrors."host".endpoint: URLs tried in order for a
	// namespace without a hosts.toml.
	Mirrors map[string][]string `json:"mirrors,omitempty"`
	// Hosts are configs."host": credentials and TLS by registry host.
	Hosts map[string]HostAuthTLS `json:"hosts,omitempty"`
	// Caller marks the whole registry configuration of a command that
	// another process (the daemon) runs for it (see CallerConfig): that
	// process then reads neither docker's config.json nor a default hosts
	// directory of its own.
	Caller bool `json:"caller,omitempty"`
}

// HostAuthTLS is one configs."host" table.
type HostAuthTLS struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identityToken,omitempty"`
	// TLS: file paths are absolute (resolved against the config file's folder).
	SkipVerify bool   `json:"skipVerify,omitempty"`
	CAFile     string `json:"caFile,omitempty"`
	CertFile   string `json:"certFile,omitempty"`
	KeyFile    string `json:"keyFile,omitempty"`
}

type configToml struct {
	Plugins map[string]struct {
		Registry *registryToml `toml:"registry"`
	} `toml:"plugins"`
}

type registryToml struct {
	ConfigPath string `toml:"config_path"`
	Mirrors    map[string]struct {
		Endpoint []string `toml:"endpoint"`
	} `toml:"mirrors"`
	Configs map[string]struct {
		Auth *struct {
			Username      string `toml:"username"`
			Password      string `toml:"password"`
			Auth          string `toml:"auth"`
			IdentityToken string `toml:"identitytoken"`
		} `toml:"auth"`
		TLS *struct {
			InsecureSkipVerify bool   `toml:"insecure_skip_verify"`
			CAFile             string `toml:"ca_file"`
			CertFile           string `toml:"cert_file"`
			KeyFile            string `toml:"key_file"`
		} `toml:"tls"`
	} `toml:"configs"`
}

// registryPlugins are the plugin tables that hold containerd's registry section.
var registryPlugins = []string{"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images"}

// LoadRegistryConfig reads the registry section of a containerd config.toml.
// A file without one gives an empty config. warning is non-empty when the
// file holds secrets and others than its owner may read it.
func LoadRegistryConfig(file string) (cfg *RegistryConfig, warning string, err error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, "", fmt.Errorf("registry config: %w", err)
	}
	var ct configToml
	if err := toml.Unmarshal(data, &ct); err != nil {
		return nil, "", hostsTomlError(file, err)
	}
	cfg = &RegistryConfig{}
	base := filepath.Dir(file)
	secrets := false
	for _, name := range registryPlugins {
		rt := ct.Plugins[name].Registry
		if rt == nil {
			continue
		}
		if rt.ConfigPath != "" && cfg.ConfigPath == "" {
			cfg.ConfigPath = resolvePath(base, rt.ConfigPath)
		}
		for host, m := range rt.Mirrors {
			if cfg.Mirrors == nil {
				cfg.Mirrors = map[string][]string{}
			}
			cfg.Mirrors[host] = append(cfg.Mirrors[host], m.Endpoint...)
		}
		for host, c := range rt.Configs {
			h := HostAuthTLS{}
			if a := c.Auth; a != nil {
				h.Username, h.Password, h.IdentityToken = a.Username, a.Password, a.IdentityToken
				if a.Auth != "" {
					u, p, err := decodeAuth(a.Auth)
					if err != nil {
						return nil, "", fmt.Errorf("%s: configs.%q.auth: %w", file, host, err)
					}
					h.Username, h.Password = u, p
				}
				secrets = secrets || h.Password != "" || h.IdentityToken != ""
			}
			if t := c.TLS; t != nil {
				h.SkipVerify = t.InsecureSkipVerify
				for _, f := range []struct {
					dst *string
					src string
				}{{&h.CAFile, t.CAFile}, {&h.CertFile, t.CertFile}, {&h.KeyFile, t.KeyFile}} {
					if f.src != "" {
						*f.dst = resolvePath(base, f.src)
					}
				}
			}
			if cfg.Hosts == nil {
				cfg.Hosts = map[string]HostAuthTLS{}
			}
			cfg.Hosts[host] = h
		}
	}
	if secrets {
		if fi, err := os.Stat(file); err == nil && fi.Mode().Perm()&0o044 != 0 {
			warning = fmt.Sprintf("%s holds registry passwords and is readable by others than its owner (chmod 600 %s)", file, file)
		}
	}
	return cfg, warning, nil
}

// decodeAuth splits a base64 "user:password" auth field.
func decodeAuth(s string) (string, string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", "", fmt.Errorf("not base64: %w", errdefs.ErrInvalidArgument)
	}
	u, p, ok := strings.Cut(string(b), ":")
	if !ok {
		return "", "", fmt.Errorf("not user:password: %w", errdefs.ErrInvalidArgument)
	}
	return u, p, nil
}

// host returns the configs."host" table for a registry host:port; docker
// hub's endpoint also answers to docker.io.
func (c *RegistryConfig) host(hostport string) (HostAuthTLS, bool) {
	if c == nil {
		return HostAuthTLS{}, false
	}
	if h, ok := c.Hosts[hostport]; ok {
		return h, true
	}
	if hostport == "registry-1.docker.io" {
		h, ok := c.Hosts["docker.io"]
		return h, ok
	}
	return HostAuthTLS{}, false
}

// credential returns the config's credentials for hostport, if any.
func (c *RegistryConfig) credential(hostport string) (auth.Credential, bool) {
	h, ok := c.host(hostport)
	if !ok || (h.Username == "" && h.Password == "" && h.IdentityToken == "") {
		return auth.EmptyCredential, false
	}
	return auth.Credential{Username: h.Username, Password: h.Password, RefreshToken: h.IdentityToken}, true
}

// under fills what cfg (from hosts.toml) leaves unsaid about TLS with the
// config's settings for the endpoint's host: hosts.toml wins where both speak.
func (c *RegistryConfig) under(cfg hostConfig, endpointHost string) hostConfig {
	h, ok := c.host(endpointHost)
	if !ok {
		return cfg
	}
	if cfg.SkipVerify == nil && h.SkipVerify {
		skip := true
		cfg.SkipVerify = &skip
	}
	if cfg.CA == nil && h.CAFile != "" {
		cfg.CA = h.CAFile
	}
	if cfg.Client == nil && h.CertFile != "" {
		cfg.Client = []any{[]any{h.CertFile, h.KeyFile}}
	}
	return cfg
}

// mirrors returns the config's mirror URLs for a namespace, leaving out
// the server itself (it is always tried last).
func (c *RegistryConfig) mirrors(namespace, server string) []string {
	if c == nil {
		return nil
	}
	var out []string
	for _, m := range c.Mirrors[namespace] {
		u, err := url.Parse(m)
		s, _ := url.Parse(server)
		if err == nil && s != nil && u.Host == s.Host {
			continue
		}
		out = append(out, m)
	}
	return out
}

// configCredential is docker's credentials behind the config's own.
func configCredential(c *RegistryConfig, next auth.CredentialFunc) auth.CredentialFunc {
	if c != nil && c.Caller {
		next = func(context.Context, string) (auth.Credential, error) { return auth.EmptyCredential, nil }
	}
	if c == nil || len(c.Hosts) == 0 {
		return next
	}
	return func(ctx context.Context, hostport string) (auth.Credential, error) {
		if cred, ok := c.credential(hostport); ok {
			return cred, nil
		}
		return next(ctx, hostport)
	}
}
