package fetch

import (
	"context"
	"net/http"
	"net/http/httptest"
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
		res, err := ts.fetcher(t, Options{Timeout: 5 * time.Second}).PullContent(ctx, ref)
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
