package fetch

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testenv"
)

// TestTokenRealmPlainHTTPElsewhere: basic credentials, from --user or from
// docker's config.json, never reach a plain-HTTP token realm on another
// host:port; the pull fails with a line naming the realm. A realm on the
// registry's own host:port still receives them.
func TestTokenRealmPlainHTTPElsewhere(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "realm", 1, linuxAMD64, false)
	pushImage(t, reg, "sec/realm", "1", img)

	gate := testenv.StartTokenGate(t, reg)
	host := gate.Host
	ref := host + "/sec/realm:1"
	resolve := func(user, pass string) error {
		r, err := newResolver(registryOptions{HostsDir: t.TempDir(), PlainHTTP: true, Timeout: 5 * time.Second, Username: user, Password: pass})
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

	writeDockerConfig(t, host, "alice", "s3cret")
	for _, src := range []struct{ name, user, pass string }{{"docker config", "", ""}, {"--user", "alice", "s3cret"}} {
		err := resolve(src.user, src.pass)
		if !errors.Is(err, errdefs.ErrUnauthorized) || strings.Contains(err.Error(), "\n") ||
			!strings.Contains(err.Error(), "token realm "+gate.ElsewhereURL+" is plain HTTP on another host than registry "+host) {
			t.Fatalf("%s, realm elsewhere: %v", src.name, err)
		}
	}
	if hits, auths := gate.Elsewhere.Seen(); hits != 0 || len(auths) != 0 {
		t.Fatalf("realm elsewhere got %d requests, Authorization %q", hits, auths)
	}

	// Without credentials the token request is anonymous and goes ahead.
	writeDockerConfig(t, "elsewhere.invalid", "bob", "x")
	if err := resolve("", ""); err != nil {
		t.Fatalf("anonymous, realm elsewhere: %v", err)
	}
	if hits, auths := gate.Elsewhere.Seen(); hits == 0 || len(auths) != 0 {
		t.Fatalf("anonymous: realm elsewhere got %d requests, Authorization %q", hits, auths)
	}

	gate.UseRealm(false)
	if err := resolve("alice", "s3cret"); err != nil {
		t.Fatalf("same-host realm: %v", err)
	}
	if _, auths := gate.SameHost.Seen(); len(auths) == 0 || auths[0] != basic {
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
	// A redirect to another host:port over plain HTTP goes ahead without
	// the Authorization header.
	var gotAuth []string
	redirected := guardCredentials(&http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		gotAuth = append(gotAuth, r.URL.Host+" "+r.Header.Get("Authorization"))
		if r.URL.Host == "reg.example:5000" {
			h := http.Header{"Location": {"http://reg.example:9000/blob"}}
			return &http.Response{StatusCode: http.StatusTemporaryRedirect, Header: h, Body: http.NoBody, Request: r}, nil
		}
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})}, "reg.example:5000")
	req, _ := http.NewRequest("GET", "http://reg.example:5000/v2/r/blobs/sha256:x", nil)
	req.Header.Set("Authorization", "Basic x")
	resp, err := redirected.Do(req)
	if err != nil {
		t.Fatalf("redirect: %v", err)
	}
	resp.Body.Close()
	if want := []string{"reg.example:5000 Basic x", "reg.example:9000 "}; strings.Join(gotAuth, "|") != strings.Join(want, "|") {
		t.Errorf("redirect sent %q, want %q", gotAuth, want)
	}
	// An endpoint named without its port matches its default-port form.
	if g := guardCredentials(&http.Client{Transport: base}, "reg.example").Transport.(*credentialGuard); g.registry != authority("reg.example:80") {
		t.Errorf("registry %q vs %q", g.registry, authority("reg.example:80"))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
