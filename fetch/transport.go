package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/casfs/casfs/errdefs"
)

const defaultTimeout = 30 * time.Second

// newHTTPClient returns a client whose every wait is bounded: dialing, the
// TLS handshake and the response headers each by their timeout, and a body
// by a progress deadline rather than an overall one (see deadline.go), so
// that a large blob may take as long as it needs while a crawling one fails.
func newHTTPClient(tlsConfig *tls.Config, dial, timeout time.Duration, d ReadDeadlines) *http.Client {
	base := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		// HTTP/1.1 only: over HTTP/2 a refused client certificate surfaces
		// as "client conn could not be established" instead of the TLS alert.
		ForceAttemptHTTP2: false,
	}
	rt := &retry.Transport{Base: &progressTransport{base: base, d: d.withDefaults()}, Policy: retryPolicy}
	return &http.Client{Transport: rt}
}

// retryPolicy retries what is worth retrying at the request level (resets,
// 408, 429 with its Retry-After, 5xx) with bounded exponential backoff; a
// dial timeout is not retried because the bound was already spent waiting.
func retryPolicy() retry.Policy {
	return &retry.GenericPolicy{
		Retryable: retryable,
		Backoff:   retry.ExponentialBackoff(250*time.Millisecond, 2, 0.1),
		MinWait:   200 * time.Millisecond,
		MaxWait:   10 * time.Second,
		MaxRetry:  4,
	}
}

func retryable(resp *http.Response, err error) (bool, error) {
	if err != nil {
		return isTransient(err), nil
	}
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests:
		return true, nil
	case resp.StatusCode == http.StatusNotImplemented, resp.StatusCode == http.StatusHTTPVersionNotSupported:
		return false, nil
	case resp.StatusCode >= 500:
		return true, nil
	}
	return false, nil
}

// isTransient reports errors after which the same request may succeed.
func isTransient(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.EPIPE) || isSlowRead(err) ||
		(errors.Is(err, io.EOF) && !errors.Is(err, context.Canceled))
}

// endpointTransport applies a hosts.toml entry to requests for its host:
// extra headers, the API root in place of /v2 (override_path or a path in
// the URL), and the ns query parameter a mirror uses to know the upstream.
type endpointTransport struct {
	base      http.RoundTripper
	host      string
	apiRoot   string
	header    http.Header
	namespace string // set for mirrors only
}

func (t *endpointTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host {
		return t.base.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	for k, vs := range t.header {
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if t.apiRoot != "/v2" && (req.URL.Path == "/v2" || strings.HasPrefix(req.URL.Path, "/v2/")) {
		req.URL.Path = t.apiRoot + strings.TrimPrefix(req.URL.Path, "/v2")
		req.URL.RawPath = ""
	}
	if t.namespace != "" && strings.HasPrefix(req.URL.Path, t.apiRoot+"/") {
		q := req.URL.Query()
		if q.Get("ns") == "" {
			q.Set("ns", t.namespace)
			req.URL.RawQuery = q.Encode()
		}
	}
	return t.base.RoundTrip(req)
}

// wrapEndpointTransport installs the endpoint's rewriting on its client.
func wrapEndpointTransport(ep *hostEndpoint) {
	ns := ""
	if ep.Mirror {
		ns = ep.Namespace
	}
	if len(ep.Header) == 0 && ep.APIRoot == "/v2" && ns == "" {
		return
	}
	c := *ep.Client
	c.Transport = &endpointTransport{base: c.Transport, host: ep.URL.Host, apiRoot: ep.APIRoot, header: ep.Header, namespace: ns}
	ep.Client = &c
}

// credentialGuard keeps secrets off the wire in clear text to anyone but
// the registry itself: a request over plain HTTP to another host:port (a
// token realm elsewhere) that carries an Authorization header or an OAuth2
// form (password or refresh token) is refused before it is sent; a
// redirect there is followed without the Authorization header. The
// registry's own plain-HTTP endpoint and realms over HTTPS are unaffected.
type credentialGuard struct {
	base     http.RoundTripper
	registry string // host:port of the endpoint
}

func (g *credentialGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && authority(req.URL.Host) != g.registry && carriesSecret(req) {
		if req.Response != nil && !isForm(req) {
			// A redirect (say, to blob storage on another port, where Go
			// keeps the header because the host name matches): follow it
			// without the credentials rather than fail the transfer.
			req = req.Clone(req.Context())
			req.Header.Del("Authorization")
			return g.base.RoundTrip(req)
		}
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("%w: token realm %s://%s%s is plain HTTP on another host than registry %s: refusing to send credentials to it (the realm must be HTTPS)",
			errdefs.ErrUnauthorized, req.URL.Scheme, req.URL.Host, req.URL.Path, g.registry)
	}
	return g.base.RoundTrip(req)
}

// carriesSecret reports a request with credentials: an Authorization
// header, or a form POST (how OAuth2 token requests carry a password or
// refresh token).
func carriesSecret(req *http.Request) bool {
	return req.Header.Get("Authorization") != "" || isForm(req)
}

func isForm(req *http.Request) bool {
	ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	return req.Method == http.MethodPost && ct == "application/x-www-form-urlencoded"
}

// authority is host[:port] in lower case without a default port (80 or
// 443), so that an endpoint named without its port matches itself.
func authority(host string) string {
	host = strings.ToLower(host)
	if h, p, err := net.SplitHostPort(host); err == nil && (p == "80" || p == "443") {
		return h
	}
	return strings.Trim(host, "[]")
}

// guardCredentials returns c with credentialGuard outermost, for the
// endpoint at host.
func guardCredentials(c *http.Client, host string) *http.Client {
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	g := *c
	g.Transport = &credentialGuard{base: base, registry: authority(host)}
	return &g
}
