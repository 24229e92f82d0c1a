package fetch

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
)

// httpsOrHTTP speaks HTTPS to a registry and, for a loopback registry whose
// scheme the user did not choose, falls back to plain HTTP when the server
// answers the TLS handshake in HTTP: what containerd and ctr do for
// localhost, and never for other hosts. For those, the error names the flag.
type httpsOrHTTP struct {
	base     http.RoundTripper
	host     string // host:port the fallback applies to
	fallback bool
	plain    atomic.Bool // the server proved to speak HTTP
}

func (t *httpsOrHTTP) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" || req.URL.Host != t.host {
		return t.base.RoundTrip(req)
	}
	if !t.plain.Load() {
		resp, err := t.base.RoundTrip(req)
		if err == nil || !speaksHTTP(err) {
			return resp, err
		}
		if !t.fallback || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
			return nil, fmt.Errorf("%w (the registry speaks plain HTTP: use --plain-http, or a hosts.toml server with http://)", err)
		}
		t.plain.Store(true)
		slog.Debug("loopback registry answered HTTPS with HTTP, using plain HTTP", "host", t.host)
	}
	req = req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		req.Body = body
	}
	req.URL.Scheme = "http"
	return t.base.RoundTrip(req)
}

// speaksHTTP recognises a server that answered a TLS handshake in HTTP.
func speaksHTTP(err error) bool {
	var rh tls.RecordHeaderError
	return errors.As(err, &rh) && strings.HasPrefix(string(rh.RecordHeader[:]), "HTTP/") ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// isLoopback reports localhost and loopback addresses.
func isLoopback(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// wrapHTTPFallback installs httpsOrHTTP on an https endpoint; implicit says
// the user named no scheme (the default server, or a scheme-less entry).
func wrapHTTPFallback(ep *hostEndpoint, implicit bool) {
	if ep.URL.Scheme != "https" {
		return
	}
	c := *ep.Client
	c.Transport = &httpsOrHTTP{base: c.Transport, host: ep.URL.Host, fallback: implicit && isLoopback(ep.URL.Hostname())}
	ep.Client = &c
}
