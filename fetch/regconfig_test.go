package fetch

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casfs/casfs/errdefs"
)

const testConfigToml = `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "certs.d"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."reg.example"]
    endpoint = ["https://mirror.example/sub", "https://reg.example"]
  [plugins."io.containerd.grpc.v1.cri".registry.configs."reg.example".auth]
    auth = "YWxpY2U6czNjcmV0"
  [plugins."io.containerd.grpc.v1.cri".registry.configs."tok.example".auth]
    identitytoken = "tok"
  [plugins."io.containerd.grpc.v1.cri".registry.configs."tls.example".tls]
    insecure_skip_verify = true
    ca_file = "ca.pem"
`

func writeConfig(t *testing.T, body string, mode os.FileMode) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(f, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, mode); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLoadRegistryConfig(t *testing.T) {
	f := writeConfig(t, testConfigToml, 0o600)
	cfg, warning, err := LoadRegistryConfig(f)
	if err != nil || warning != "" {
		t.Fatalf("load: %v, warning %q", err, warning)
	}
	base := filepath.Dir(f)
	if cfg.ConfigPath != filepath.Join(base, "certs.d") {
		t.Errorf("config_path = %q, want it resolved against the file's folder", cfg.ConfigPath)
	}
	cred, ok := cfg.credential("reg.example")
	if !ok || cred.Username != "alice" || cred.Password != "s3cret" {
		t.Errorf("auth of reg.example = %+v %v, want alice:s3cret", cred, ok)
	}
	if cred, ok := cfg.credential("tok.example"); !ok || cred.RefreshToken != "tok" {
		t.Errorf("identitytoken: %+v %v", cred, ok)
	}
	if _, ok := cfg.credential("other.example"); ok {
		t.Errorf("credentials for a host the file does not name")
	}
	if h := cfg.Hosts["tls.example"]; !h.SkipVerify || h.CAFile != filepath.Join(base, "ca.pem") {
		t.Errorf("tls of tls.example: %+v", h)
	}

	// Mirrors come before the server, which is not listed twice.
	eps, err := loadEndpoints(t.TempDir(), "reg.example", hostsOptions{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 2 || eps[0].URL.Host != "mirror.example" || eps[0].APIRoot != "/sub/v2" || !eps[0].Mirror || eps[1].URL.String() != "https://reg.example" {
		t.Fatalf("endpoints: %+v", eps)
	}

	// A hosts.toml for the namespace wins: its mirrors, its CA.
	dir := t.TempDir()
	writeHostsToml(t, dir, "reg.example", "[host.\"https://other-mirror.example\"]\n")
	eps, err = loadEndpoints(dir, "reg.example", hostsOptions{Config: cfg})
	if err != nil || len(eps) != 2 || eps[0].URL.Host != "other-mirror.example" {
		t.Fatalf("hosts.toml over config mirrors: %+v %v", eps, err)
	}
}

func TestLoadRegistryConfigWarnsAndFails(t *testing.T) {
	_, warning, err := LoadRegistryConfig(writeConfig(t, testConfigToml, 0o644))
	if err != nil || !strings.Contains(warning, "readable by others") || !strings.Contains(warning, "chmod 600") {
		t.Fatalf("world-readable passwords: warning %q, err %v", warning, err)
	}
	noSecrets := strings.SplitN(testConfigToml, "  [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"reg.example\".auth]", 2)[0]
	if _, warning, err := LoadRegistryConfig(writeConfig(t, noSecrets, 0o644)); err != nil || warning != "" {
		t.Fatalf("no secrets: warning %q, err %v", warning, err)
	}
	f := writeConfig(t, "[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"r\".auth]\nauth = \"!!\"\n", 0o600)
	if _, _, err := LoadRegistryConfig(f); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), f) {
		t.Fatalf("bad auth: %v", err)
	}
	f = writeConfig(t, "[plugins\n", 0o600)
	if _, _, err := LoadRegistryConfig(f); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), f+":1:") {
		t.Fatalf("malformed file: %v", err)
	}
}

// config.toml's tls for a host applies where hosts.toml says nothing about
// TLS, and loses where it does.
func TestRegistryConfigTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	cfg := &RegistryConfig{Hosts: map[string]HostAuthTLS{host: {SkipVerify: true}}}
	if err := getServerV2(t.TempDir(), host, hostsOptions{Config: cfg}); err != nil {
		t.Fatalf("insecure_skip_verify from config.toml: %v", err)
	}
	dir := t.TempDir()
	writeHostsToml(t, dir, host, "skip_verify = false\n")
	if err := getServerV2(dir, host, hostsOptions{Config: cfg}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("hosts.toml's skip_verify = false should win: err = %v", err)
	}
}
