package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/internal/testenv"
)

// body is what the upstream serves on every path: big enough to span
// several writes of the reverse proxy's copy buffer.
var body = bytes.Repeat([]byte("0123456789abcdef"), 16<<10)

func startUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Host", r.Host)
		http.ServeContent(w, r, "blob", time.Unix(0, 0), bytes.NewReader(body))
	}))
	t.Cleanup(up.Close)
	return up
}

func startProxy(t *testing.T, upstream string) *Proxy {
	t.Helper()
	p, err := Start(upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// get fetches path through p with a client that does not retry.
func get(t *testing.T, ctx context.Context, p *Proxy, path string, hdr ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestPassAndCount(t *testing.T) {
	p := startProxy(t, startUpstream(t).URL)
	for range 3 {
		resp, b, err := get(t, t.Context(), p, "/v2/a/blobs/x")
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, body) {
			t.Fatalf("pass: %v %v %d bytes", err, resp, len(b))
		}
		if h := resp.Header.Get("X-Host"); h != p.Host {
			t.Fatalf("upstream saw Host %q, want the proxy's %q", h, p.Host)
		}
	}
	get(t, t.Context(), p, "/v2/b/manifests/1", "Range", "bytes=5-")
	if n := p.Count(`/blobs/`); n != 3 {
		t.Fatalf("Count(blobs) = %d, want 3", n)
	}
	reqs := p.Requests()
	if len(reqs) != 4 || reqs[3].Range != "bytes=5-" || reqs[3].Status != http.StatusPartialContent || reqs[0].Status != 200 {
		t.Fatalf("requests: %+v", reqs)
	}
}

func TestStatusTimesAndRetryAfter(t *testing.T) {
	p := startProxy(t, startUpstream(t).URL)
	if err := p.Set(`^/v2/a/`, Fault{Kind: Status, Status: 429, RetryAfter: "1", Times: 2}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		resp, b, err := get(t, t.Context(), p, "/v2/a/blobs/x")
		if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(b), "injected 429") {
			t.Fatalf("request %d: %v %+v %q", i, err, resp, b)
		}
	}
	if resp, b, err := get(t, t.Context(), p, "/v2/a/blobs/x"); err != nil || resp.StatusCode != 200 || !bytes.Equal(b, body) {
		t.Fatalf("third request should pass: %v %+v", err, resp)
	}
	// Other paths never matched.
	if resp, _, _ := get(t, t.Context(), p, "/v2/b/blobs/x"); resp.StatusCode != 200 {
		t.Fatalf("unmatched path: %d", resp.StatusCode)
	}
	// Method filter.
	p.Set(`^/v2/b/`, Fault{Kind: Status, Status: 500, Method: http.MethodHead})
	if resp, _, _ := get(t, t.Context(), p, "/v2/b/blobs/x"); resp.StatusCode != 200 {
		t.Fatalf("GET matched a HEAD-only rule: %d", resp.StatusCode)
	}
	if got := p.Requests(); got[0].Fault != Status || got[2].Fault != Pass {
		t.Fatalf("faults recorded: %+v", got)
	}
}

func TestDropAfterBytes(t *testing.T) {
	p := startProxy(t, startUpstream(t).URL)
	const after = 100_000
	p.Set(`/blobs/`, Fault{Kind: Drop, After: after, Times: 1})
	resp, b, err := get(t, t.Context(), p, "/v2/a/blobs/x")
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read of a dropped body: %v, want unexpected EOF", err)
	}
	if resp.StatusCode != 200 || len(b) != after || !bytes.Equal(b, body[:after]) {
		t.Fatalf("got status %d and %d bytes, want 200 and the first %d bytes", resp.StatusCode, len(b), after)
	}
	// The rule is spent: a resume with Range gets the rest.
	resp, b, err = get(t, t.Context(), p, "/v2/a/blobs/x", "Range", "bytes=100000-")
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, body[after:]) {
		t.Fatalf("resume: %v %+v %d bytes", err, resp, len(b))
	}
}

func TestDropBeforeBody(t *testing.T) {
	p := startProxy(t, startUpstream(t).URL)
	p.Set(`/blobs/`, Fault{Kind: Drop})
	_, b, err := get(t, t.Context(), p, "/v2/a/blobs/x")
	if err == nil || len(b) != 0 {
		t.Fatalf("drop at 0: %v, %d bytes", err, len(b))
	}
}

func TestCorrupt(t *testing.T) {
	p := startProxy(t, startUpstream(t).URL)
	p.Set(`/blobs/`, Fault{Kind: Corrupt, After: 70_000})
	resp, b, err := get(t, t.Context(), p, "/v2/a/blobs/x")
	if err != nil || resp.StatusCode != 200 || len(b) != len(body) {
		t.Fatalf("corrupt: %v %+v %d bytes", err, resp, len(b))
	}
	want := append([]byte(nil), body...)
	want[70_000] ^= 0xff
	if !bytes.Equal(b, want) {
		t.Fatal("corrupt body differs from the upstream's in more than the one byte")
	}
	if digest.FromBytes(b) == digest.FromBytes(body) {
		t.Fatal("digest unchanged")
	}
}

func TestStallUntilCleared(t *testing.T) {
	p := startProxy(t, startUpstream(t).URL)
	p.Set(`/blobs/`, Fault{Kind: Stall})
	// The client gives up: the stall ends with it.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := get(t, ctx, p, "/v2/a/blobs/x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled request: %v, want the client's deadline", err)
	}
	// A held request is forwarded once the rule is cleared.
	type res struct {
		b   []byte
		err error
	}
	done := make(chan res, 1)
	go func() {
		_, b, err := get(t, t.Context(), p, "/v2/a/blobs/y")
		done <- res{b, err}
	}()
	waitFor(t, func() bool { return p.Count(`/blobs/y$`) == 1 })
	select {
	case r := <-done:
		t.Fatalf("request finished while stalled: %v", r.err)
	default:
	}
	p.Clear(`/blobs/`)
	r := <-done
	if r.err != nil || !bytes.Equal(r.b, body) {
		t.Fatalf("released request: %v, %d bytes", r.err, len(r.b))
	}
}

func TestStallBody(t *testing.T) {
	p := startProxy(t, startUpstream(t).URL)
	p.Set(`/blobs/`, Fault{Kind: StallBody, After: 10})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, p.URL+"/v2/a/blobs/x", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, head); err != nil || !bytes.Equal(head, body[:10]) {
		t.Fatalf("first bytes: %q %v", head, err)
	}
	p.Reset()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(rest, body[10:]) {
		t.Fatalf("rest after release: %d bytes, %v", len(rest), err)
	}
}

func TestCloseReleasesStalls(t *testing.T) {
	p, err := Start(startUpstream(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	p.Set(`.`, Fault{Kind: Stall})
	done := make(chan error, 1)
	go func() {
		_, _, err := get(t, t.Context(), p, "/v2/")
		done <- err
	}()
	waitFor(t, func() bool { return p.Count(`.`) == 1 })
	p.Close()
	if err := <-done; err == nil {
		t.Fatal("a request held when the proxy closed succeeded")
	}
}

func TestBadInput(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "127.0.0.1:5000", "http://"} {
		if _, err := Start(u); err == nil {
			t.Errorf("Start(%q) accepted", u)
		}
	}
	p := startProxy(t, startUpstream(t).URL)
	if err := p.Set(`(`, Fault{}); err == nil {
		t.Error("Set accepted a bad pattern")
	}
	if p.Count(`(`) != 0 {
		t.Error("Count of a bad pattern")
	}
}

// TestRegistry checks the proxy in front of a real registry: a blob pushed
// through it (the registry's upload Location must point back at the proxy)
// reads back, whole and by Range, and the patterns match its paths.
func TestRegistry(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	p := startProxy(t, reg.URL)
	data := []byte("hello through the fault proxy")
	d := digest.FromBytes(data)
	resp, err := http.Post(p.URL+"/v2/lab/x/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(loc, p.URL) {
		t.Fatalf("start upload: %s, Location %q", resp.Status, loc)
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+d.String(), bytes.NewReader(data))
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload: %v %v", err, resp)
	}
	resp.Body.Close()
	p.Set(Blob(d), Fault{Kind: Status, Status: 503, Times: 1})
	if resp, _, _ := get(t, t.Context(), p, "/v2/lab/x/blobs/"+d.String()); resp.StatusCode != 503 {
		t.Fatalf("Blob pattern did not match: %d", resp.StatusCode)
	}
	if resp, b, err := get(t, t.Context(), p, "/v2/lab/x/blobs/"+d.String(), "Range", "bytes=6-"); err != nil ||
		resp.StatusCode != http.StatusPartialContent || string(b) != "through the fault proxy" {
		t.Fatalf("range read: %v %v %q", err, resp, b)
	}
	if n := p.Count(Blob(d)); n != 2 {
		t.Fatalf("Count(Blob) = %d, want 2", n)
	}
	if p.Count(Manifest("1")) != 0 {
		t.Fatal("Manifest pattern matched a blob")
	}
}

// waitFor polls cond (bounded) for state another goroutine reaches.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
