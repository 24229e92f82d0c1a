package fetch

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casfs/casfs/errdefs"
)

func writeHostsToml(t *testing.T, dir, host, body string) string {
	t.Helper()
	d := filepath.Join(dir, host)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(d, "hosts.toml")
	if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLoadEndpointsDefaults(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		host, plain, want string
	}{
		{"docker.io", "", "https://registry-1.docker.io"},
		{"quay.io", "", "https://quay.io"},
		{"127.0.0.1:5000", "plain", "http://127.0.0.1:5000"},
		{"127.0.0.1:5000", "", "https://127.0.0.1:5000"},
	} {
		eps, err := loadEndpoints(dir, tc.host, hostsOptions{PlainHTTP: tc.plain != ""})
		if err != nil {
			t.Fatal(err)
		}
		if len(eps) != 1 || eps[0].URL.String() != tc.want || eps[0].Mirror || eps[0].APIRoot != "/v2" || eps[0].Capabilities != capAll {
			t.Errorf("%s: got %+v, want one server %s", tc.host, eps, tc.want)
		}
	}
}

func TestLoadEndpointsHostsToml(t *testing.T) {
	dir := t.TempDir()
	writeHostsToml(t, dir, "reg.example:5000", `
server = "https://reg.example:5000"
capabilities = ["pull", "resolve", "push"]

[host."https://zeta-mirror.example/sub"]
  capabilities = ["pull"]
  [host."https://zeta-mirror.example/sub".header]
    x-one = "a"
    x-two = ["b", "c"]

[host."http://alpha-mirror.example:8080/api/v2/upstream"]
  capabilities = ["pull", "resolve"]
  override_path = true
  skip_verify = true
`)
	eps, err := loadEndpoints(dir, "reg.example:5000", hostsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ep := range eps {
		got = append(got, ep.URL.String()+ep.APIRoot+" "+ep.Capabilities.String())
	}
	want := []string{
		"https://zeta-mirror.example/sub/v2 pull",
		"http://alpha-mirror.example:8080/api/v2/upstream pull,resolve",
		"https://reg.example:5000/v2 pull,resolve,push",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("endpoints in file order:\n got %q\nwant %q", got, want)
	}
	if h := eps[0].Header.Values("X-Two"); len(h) != 2 || h[1] != "c" || eps[0].Header.Get("X-One") != "a" {
		t.Errorf("headers: %v", eps[0].Header)
	}
	if !eps[0].Mirror || eps[2].Mirror {
		t.Errorf("mirror flags wrong: %v %v", eps[0].Mirror, eps[2].Mirror)
	}
}

func TestLoadEndpointsPortDirAndDefault(t *testing.T) {
	dir := t.TempDir()
	writeHostsToml(t, dir, "_default", `[host."https://all.example"]`+"\n")
	writeHostsToml(t, dir, "reg.example_5000_", `server = "https://underscored.example"`+"\n")
	eps, err := loadEndpoints(dir, "reg.example:5000", hostsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 || eps[0].URL.Host != "underscored.example" {
		t.Fatalf("host_port_ folder not used: %+v", eps)
	}
	eps, err = loadEndpoints(dir, "other.example", hostsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 2 || eps[0].URL.Host != "all.example" || eps[1].URL.String() != "https://other.example" {
		t.Fatalf("_default: %+v", eps)
	}
}

func TestLoadEndpointsBadToml(t *testing.T) {
	dir := t.TempDir()
	f := writeHostsToml(t, dir, "reg.example", "server = \"https://reg.example\"\n\n[host.\"https://m.example\"\n  capabilities = [\"pull\"]\n")
	_, err := loadEndpoints(dir, "reg.example", hostsOptions{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("want ErrInvalidArgument, got %v", err)
	}
	if !strings.Contains(err.Error(), f+":3:") {
		t.Fatalf("error should name %s and line 3: %v", f, err)
	}

	writeHostsToml(t, dir, "reg2.example", "[host.\"https://m.example\"]\n  capabilities = [\"fly\"]\n")
	_, err = loadEndpoints(dir, "reg2.example", hostsOptions{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "fly") {
		t.Fatalf("unknown capability: %v", err)
	}

	writeHostsToml(t, dir, "reg3.example", "ca = 7\n")
	_, err = loadEndpoints(dir, "reg3.example", hostsOptions{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("ca = 7: %v", err)
	}
}

func TestLoadEndpointsMissingCAFile(t *testing.T) {
	dir := t.TempDir()
	writeHostsToml(t, dir, "reg.example", "ca = \"nope.crt\"\n")
	_, err := loadEndpoints(dir, "reg.example", hostsOptions{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "reg.example", "nope.crt")) {
		t.Fatalf("want an error naming the CA file resolved against the hosts.toml folder, got %v", err)
	}
}

// The endpoint transport rewrites the API root, adds headers and, for a
// mirror, the ns parameter.
func TestEndpointTransportRewrites(t *testing.T) {
	var gotPath, gotNS, gotHeader string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotNS, gotHeader = r.URL.Path, r.URL.Query().Get("ns"), r.Header.Get("X-Custom")
		w.WriteHeader(http.StatusTeapot)
	}))
	defer srv.Close()
	dir := t.TempDir()
	writeHostsToml(t, dir, "reg.example", `
[host."`+srv.URL+`/mirror/root"]
  override_path = true
  [host."`+srv.URL+`/mirror/root".header]
    x-custom = "yes"
`)
	eps, err := loadEndpoints(dir, "reg.example", hostsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, eps[0].URL.String()+"/v2/lib/x/manifests/1", nil)
	resp, err := eps[0].Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotPath != "/mirror/root/lib/x/manifests/1" || gotNS != "reg.example" || gotHeader != "yes" {
		t.Fatalf("path %q ns %q header %q", gotPath, gotNS, gotHeader)
	}
}

func TestParseReference(t *testing.T) {
	for _, tc := range []struct{ in, name, host, repo, obj string }{
		{"nginx:alpine", "docker.io/library/nginx:alpine", "docker.io", "library/nginx", "alpine"},
		{"nginx", "docker.io/library/nginx:latest", "docker.io", "library/nginx", "latest"},
		{"127.0.0.1:5000/a/b:1", "127.0.0.1:5000/a/b:1", "127.0.0.1:5000", "a/b", "1"},
		{"x/y@sha256:" + strings.Repeat("a", 64), "docker.io/x/y@sha256:" + strings.Repeat("a", 64), "docker.io", "x/y", "sha256:" + strings.Repeat("a", 64)},
	} {
		r, err := ParseReference(tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if r.Name != tc.name || r.Host != tc.host || r.Repo != tc.repo || r.Object() != tc.obj {
			t.Errorf("%s: got %+v", tc.in, r)
		}
	}
	for _, bad := range []string{"", "lib/UPPER", "a:b:c", "x@sha256:abc"} {
		if _, err := ParseReference(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q: want ErrInvalidArgument, got %v", bad, err)
		}
	}
}

// getServerV2 asks the namespace's server endpoint for /v2/.
func getServerV2(dir, host string, opts hostsOptions) error {
	eps, err := loadEndpoints(dir, host, opts)
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, eps[len(eps)-1].URL.String()+"/v2/", nil)
	resp, err := eps[len(eps)-1].Client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Command-line TLS settings win over hosts.toml's for every endpoint: a CA
// file replaces hosts.toml's (missing) one, and skip-verify reaches a
// server whose certificate nothing trusts.
func TestLoadEndpointsTLSOptionsWin(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	get := func(opts hostsOptions, dir string) error { return getServerV2(dir, host, opts) }
	empty := t.TempDir()
	if err := get(hostsOptions{}, empty); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server: err = %v, want a certificate error", err)
	}
	dir := t.TempDir()
	writeHostsToml(t, dir, host, "ca = \"nope.crt\"\nskip_verify = false\n")
	for _, d := range []string{empty, dir} {
		if err := get(hostsOptions{TLS: TLSOptions{SkipVerify: true}}, d); err != nil {
			t.Fatalf("skip-verify: %v", err)
		}
	}
	if err := get(hostsOptions{TLS: TLSOptions{CAFile: ca}}, dir); err != nil {
		t.Fatalf("--tlscacert over hosts.toml's ca: %v", err)
	}
	if err := get(hostsOptions{TLS: TLSOptions{CAFile: "ca.pem"}}, empty); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("relative CA path: err = %v, want ErrInvalidArgument naming it", err)
	}
	if err := get(hostsOptions{TLS: TLSOptions{KeyFile: ca}}, empty); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("key without certificate: err = %v, want ErrInvalidArgument", err)
	}
}
