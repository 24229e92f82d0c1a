package fetch

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/testenv"
)

// TestLoopbackFallsBackToHTTP: without --plain-http, a loopback registry
// that speaks HTTP is reached over HTTP (127.0.0.1 and localhost), as ctr
// does; the same pull with a hosts.toml that says https:// fails.
func TestLoopbackFallsBackToHTTP(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "fb", 1, linuxAMD64, false)
	pushImage(t, reg, "fb", "1", img)
	ctx := context.Background()
	for _, ref := range []string{reg.Ref("fb", "1"), strings.Replace(reg.Ref("fb", "1"), "127.0.0.1", "localhost", 1)} {
		ts := newTestStore(t)
		res, err := ts.op(t, Options{Timeout: 5 * time.Second}).PullContent(ctx, ref)
		if err != nil {
			t.Fatalf("%s without --plain-http: %v", ref, err)
		}
		if res.Target.Digest != img.Manifest.Digest {
			t.Fatalf("%s: got %s, want %s", ref, res.Target.Digest, img.Manifest.Digest)
		}
	}
}

// TestHTTPAnswerNamesTheFlag: where no fallback applies (a host that is not
// loopback, or a scheme the user chose), the error names --plain-http.
func TestHTTPAnswerNamesTheFlag(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	rt := &httpsOrHTTP{base: http.DefaultTransport, host: host}
	req, _ := http.NewRequest(http.MethodGet, "https://"+host+"/v2/", nil)
	_, err := rt.RoundTrip(req)
	if err == nil || !strings.Contains(err.Error(), "use --plain-http") {
		t.Fatalf("want an error naming --plain-http, got %v", err)
	}
	rt.fallback = true
	resp, err := rt.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("with the fallback: %v", err)
	}
	resp.Body.Close()
}

// TestDefaultHostsDirs: with no directory named, the first of casfs's,
// containerd's and docker's certs.d that exists is used.
func TestDefaultHostsDirs(t *testing.T) {
	base := t.TempDir()
	missing, containerd, docker := base+"/casfs", base+"/containerd", base+"/docker"
	for dir, server := range map[string]string{containerd: "https://from-containerd:5000", docker: "https://from-docker:5000"} {
		if err := os.MkdirAll(dir+"/reg.example", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/reg.example/hosts.toml", []byte("server = \""+server+"\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := defaultHostsDirs
	defer func() { defaultHostsDirs = old }()
	defaultHostsDirs = []string{missing, containerd, docker}
	eps, err := loadEndpoints("", "reg.example", hostsOptions{})
	if err != nil || len(eps) != 1 || eps[0].URL.Host != "from-containerd:5000" {
		t.Fatalf("endpoints %v, %v; want containerd's server", eps, err)
	}
	defaultHostsDirs = []string{missing}
	if eps, err = loadEndpoints("", "reg.example", hostsOptions{}); err != nil || eps[0].URL.Host != "reg.example" {
		t.Fatalf("no directory: %v, %v; want the default server", eps, err)
	}
}
