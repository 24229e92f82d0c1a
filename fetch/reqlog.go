package fetch

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// loggedTransport logs each registry request at debug level: method, URL
// without its query (upload locations carry state there), status, bytes
// and time. Headers are never logged: they carry credentials and tokens.
type loggedTransport struct{ base http.RoundTripper }

func (t loggedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !slog.Default().Enabled(req.Context(), slog.LevelDebug) {
		return t.base.RoundTrip(req)
	}
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	u := *req.URL
	u.RawQuery, u.User = "", nil
	attrs := []any{"method", req.Method, "url", u.String(), "time", time.Since(start).Round(time.Millisecond)}
	if err != nil {
		slog.Default().Log(context.Background(), slog.LevelDebug, "registry request failed", append(attrs, "err", err)...)
		return resp, err
	}
	slog.Default().Log(context.Background(), slog.LevelDebug, "registry request", append(attrs, "status", resp.StatusCode, "bytes", resp.ContentLength)...)
	return resp, nil
}

// wrapRequestLog installs loggedTransport on the endpoint's client.
func wrapRequestLog(ep *hostEndpoint) {
	c := *ep.Client
	c.Transport = loggedTransport{base: c.Transport}
	ep.Client = &c
}
