package testenv

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// TokenRealm is a token server that grants every request and records the
// Authorization header each one carried.
type TokenRealm struct {
	mu    sync.Mutex
	hits  int
	auths []string
}

func (tr *TokenRealm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tr.mu.Lock()
	tr.hits++
	if a := r.Header.Get("Authorization"); a != "" {
		tr.auths = append(tr.auths, a)
	}
	tr.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"token":"`+grantedToken+`"}`)
}

// Seen returns how many requests the realm received and the Authorization
// headers among them.
func (tr *TokenRealm) Seen() (int, []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.hits, append([]string(nil), tr.auths...)
}

const grantedToken = "granted"

// TokenGate is a plain-HTTP bearer-token gate in front of a registry:
// without the token it answers 401 with a challenge naming its realm,
// either SameHost (path /token on the gate itself) or Elsewhere (a token
// server on 127.0.0.2, another host:port).
type TokenGate struct {
	URL, Host           string // http://127.0.0.1:PORT and 127.0.0.1:PORT
	SameHost, Elsewhere *TokenRealm
	ElsewhereURL        string // the other realm, http://127.0.0.2:PORT/token

	mu    sync.Mutex
	realm string
}

// StartTokenGate starts a gate in front of reg, challenging with the
// realm elsewhere until UseRealm says otherwise. Both servers stop at the
// end of the test.
func StartTokenGate(t testing.TB, reg *Registry) *TokenGate {
	t.Helper()
	target, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	g := &TokenGate{SameHost: &TokenRealm{}, Elsewhere: &TokenRealm{}}
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	other := &httptest.Server{Listener: ln, Config: &http.Server{Handler: g.Elsewhere}}
	other.Start()
	t.Cleanup(other.Close)
	g.ElsewhereURL = other.URL + "/token"
	g.realm = g.ElsewhereURL

	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = reg.Client().Transport
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			g.SameHost.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+grantedToken {
			g.mu.Lock()
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+g.realm+`",service="casfs-test"`)
			g.mu.Unlock()
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	g.URL = front.URL
	g.Host = strings.TrimPrefix(front.URL, "http://")
	return g
}

// UseRealm makes the challenge name the realm elsewhere or the gate's own.
func (g *TokenGate) UseRealm(elsewhere bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.realm = g.URL + "/token"
	if elsewhere {
		g.realm = g.ElsewhereURL
	}
}
