package fetch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// dockerConfig writes a docker config.json with user:pass for each host
// and points DOCKER_CONFIG at it.
func dockerConfig(t *testing.T, creds map[string]string) {
	t.Helper()
	auths := map[string]map[string]string{}
	for host, up := range creds {
		auths[host] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(up))}
	}
	b, _ := json.Marshal(map[string]any{"auths": auths})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
}

// TestCallerConfig: the caller's configuration carries its docker
// credentials for the registry and for every mirror its hosts.toml or
// config.toml lists, config.toml's own credentials win, and the process
// that uses it reads no docker config.json of its own.
func TestCallerConfig(t *testing.T) {
	dockerConfig(t, map[string]string{
		"reg.example":       "alice:reg-pass",
		"mirror.example":    "alice:mirror-pass",
		"other.example":     "alice:other-pass",
		"cfg.example":       "alice:docker-pass",
		"cfgmirror.example": "alice:cfgmirror-pass",
	})
	hosts := t.TempDir()
	os.MkdirAll(filepath.Join(hosts, "reg.example"), 0o755)
	toml := "server = \"https://reg.example\"\n[host.\"https://mirror.example\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	if err := os.WriteFile(filepath.Join(hosts, "reg.example", "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &RegistryConfig{
		Hosts:   map[string]HostAuthTLS{"cfg.example": {Username: "bob", Password: "cfg-pass"}, "tls.example": {SkipVerify: true}},
		Mirrors: map[string][]string{"cfg.example": {"https://cfgmirror.example"}},
	}

	out, dir := CallerConfig(context.Background(), cfg, hosts, false, []string{"reg.example", "cfg.example"})
	if dir != hosts || !out.Caller {
		t.Fatalf("hosts dir %q, caller %v: want %q, true", dir, out.Caller, hosts)
	}
	want := map[string]string{"reg.example": "reg-pass", "mirror.example": "mirror-pass", "cfg.example": "cfg-pass", "cfgmirror.example": "cfgmirror-pass"}
	for h, p := range want {
		if got := out.Hosts[h]; got.Password != p {
			t.Errorf("%s: password %q, want %q", h, got.Password, p)
		}
	}
	if _, ok := out.Hosts["other.example"]; ok {
		t.Errorf("credentials for a host the operation does not contact travel too")
	}
	if !out.Hosts["tls.example"].SkipVerify || cfg.Hosts["reg.example"].Password != "" {
		t.Errorf("config.toml's settings lost, or the caller's config changed in place: %+v %+v", out.Hosts, cfg.Hosts)
	}

	// The daemon's side: only what travelled, never its own config.json.
	cred := configCredential(out, dockerCredential())
	for h, p := range map[string]string{"mirror.example": "mirror-pass", "other.example": ""} {
		c, err := cred(context.Background(), h)
		if err != nil || c.Password != p {
			t.Errorf("credential for %s on the daemon's side: %q %v, want %q", h, c.Password, err, p)
		}
	}
}

// TestCallerConfigNoDefaultHostsDir: a caller's configuration without a
// hosts directory (none of the defaults existed on its side) makes the
// daemon read none of its own defaults either.
func TestCallerConfigNoDefaultHostsDir(t *testing.T) {
	daemonDefault := t.TempDir()
	os.MkdirAll(filepath.Join(daemonDefault, "reg.example"), 0o755)
	toml := "[host.\"https://mirror.example\"]\n"
	if err := os.WriteFile(filepath.Join(daemonDefault, "reg.example", "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	saved := defaultHostsDirs
	t.Cleanup(func() { defaultHostsDirs = saved })

	defaultHostsDirs = []string{daemonDefault}
	eps, err := loadEndpoints("", "reg.example", hostsOptions{})
	if err != nil || len(eps) != 2 {
		t.Fatalf("the default hosts dir is read for the daemon's own operations: %v %v", eps, err)
	}
	eps, err = loadEndpoints("", "reg.example", hostsOptions{Config: &RegistryConfig{Caller: true}})
	if err != nil || len(eps) != 1 || eps[0].URL.Host != "reg.example" {
		t.Fatalf("endpoints for a caller without a hosts dir: %v %v, want the server only", eps, err)
	}
}
