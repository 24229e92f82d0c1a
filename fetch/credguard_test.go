package fetch

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testenv"
)

// tokenRealm is a token server that records the Authorization header of
// every request it receives.
type tokenRealm struct {
	mu    sync.Mutex
	auths []string
	hits  int
}

func (tr *tokenRealm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tr.mu.Lock()
	tr.hits++
	if a := r.Header.Get("Authorization"); a != "" {
		tr.auths = append(tr.auths, a)
	}
	tr.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"token":"granted"}`)
}

func (tr *tokenRealm) seen() (int, []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.hits, append([]string(nil), tr.auths...)
}

// tokenFront puts a bearer-token gate in front of a real registry: without
// the token it answers 401 with a challenge naming realm; /token on the
// front itself is a same-host realm.
func tokenFront(t *testing.T, reg *testenv.Registry, sameHost *tokenRealm) (*httptest.Server, func(realm string)) {
	t.Helper()
	target, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	realm := ""
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			sameHost.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer granted" {
			mu.Lock()
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`",service="casfs-test"`)
			mu.Unlock()
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	return front, func(s string) { mu.Lock(); realm = s; mu.Unlock() }
}

// TestTokenRealmPlainHTTPElsewhere: basic credentials, from --user or from
// docker's config.json, never reach a plain-HTTP token realm on another
// host:port; the pull fails with a line naming the realm. A realm on the
// registry's own host:port still receives them.
func TestTokenRealmPlainHTTPElsewhere(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "realm", 1, linuxAMD64, false)
	pushImage(t, reg, "sec/realm", "1", img)

	var sameHost, other tokenRealm
	front, setRealm := tokenFront(t, reg, &sameHost)
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := &httptest.Server{Listener: ln, Config: &http.Server{Handler: &other}}
	elsewhere.Start()
	t.Cleanup(elsewhere.Close)

	host := strings.TrimPrefix(front.URL, "http://")
	ref := host + "/sec/realm:1"
	resolve := func(user, pass string) error {
		r, err := NewResolver(RegistryOptions{HostsDir: t.TempDir(), PlainHTTP: true, Timeout: 5 * time.Second, Username: user, Password: pass})
		if err != nil {
			t.Fatal(err)
		}
		_, desc, err := r.Resolve(context.Background(), ref)
		if err == nil && desc.Digest != img.Manifest.Digest {
			t.Fatalf("digest %s, want %s", desc.Digest, img.Manifest.Digest)
		}
		return err
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))

	setRealm(elsewhere.URL + "/token")
	writeDockerConfig(t, host, "alice", "s3cret")
	for _, src := range []struct{ name, user, pass string }{{"docker config", "", ""}, {"--user", "alice", "s3cret"}} {
		err := resolve(src.user, src.pass)
		if !errors.Is(err, errdefs.ErrUnauthorized) || strings.Contains(err.Error(), "\n") ||
			!strings.Contains(err.Error(), "token realm "+elsewhere.URL+"/token is plain HTTP on another host than registry "+host) {
			t.Fatalf("%s, realm elsewhere: %v", src.name, err)
		}
	}
	if hits, auths := other.seen(); hits != 0 || len(auths) != 0 {
		t.Fatalf("realm elsewhere got %d requests, Authorization %q", hits, auths)
	}

	// Without credentials the token request is anonymous and goes ahead.
	writeDockerConfig(t, "elsewhere.invalid", "bob", "x")
	if err := resolve("", ""); err != nil {
		t.Fatalf("anonymous, realm elsewhere: %v", err)
	}
	if hits, auths := other.seen(); hits == 0 || len(auths) != 0 {
		t.Fatalf("anonymous: realm elsewhere got %d requests, Authorization %q", hits, auths)
	}

	setRealm(front.URL + "/token")
	if err := resolve("alice", "s3cret"); err != nil {
		t.Fatalf("same-host realm: %v", err)
	}
	if _, auths := sameHost.seen(); len(auths) == 0 || auths[0] != basic {
		t.Fatalf("same-host realm got Authorization %q, want %q", auths, basic)
	}
}

// TestCredentialGuard checks which requests the guard lets through.
func TestCredentialGuard(t *testing.T) {
	var sent []string
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent = append(sent, r.Method+" "+r.URL.String())
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})
	c := guardCredentials(&http.Client{Transport: base}, "reg.example:5000")
	for _, tc := range []struct {
		method, url, auth, ctype string
		ok                       bool
	}{
		{"GET", "http://reg.example:5000/token", "Basic x", "", true},
		{"GET", "http://REG.example:5000/v2/", "Basic x", "", true},
		{"GET", "https://auth.example/token", "Basic x", "", true},
		{"GET", "http://auth.example/token", "", "", true},
		{"GET", "http://auth.example/token", "Basic x", "", false},
		{"GET", "http://reg.example:5001/token", "Basic x", "", false},
		{"POST", "http://auth.example/token", "", "application/x-www-form-urlencoded; charset=utf-8", false},
		{"POST", "https://auth.example/token", "", "application/x-www-form-urlencoded", true},
	} {
		sent = nil
		req, _ := http.NewRequest(tc.method, tc.url, strings.NewReader("refresh_token=r"))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, err := c.Do(req)
		if resp != nil {
			resp.Body.Close()
		}
		if got := err == nil && len(sent) == 1; got != tc.ok {
			t.Errorf("%s %s auth=%q: sent %v err %v, want allowed=%v", tc.method, tc.url, tc.auth, sent, err, tc.ok)
		}
		if !tc.ok && !errors.Is(err, errdefs.ErrUnauthorized) {
			t.Errorf("%s %s: error %v is not ErrUnauthorized", tc.method, tc.url, err)
		}
	}
	// An endpoint named without its port matches its default-port form.
	if g := guardCredentials(&http.Client{Transport: base}, "reg.example").Transport.(*credentialGuard); g.registry != authority("reg.example:80") {
		t.Errorf("registry %q vs %q", g.registry, authority("reg.example:80"))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
