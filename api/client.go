package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// Client speaks store.API to a casfs daemon over its unix socket.
type Client struct {
	socket string
	tr     *http.Transport
	hc     *http.Client
}

var _ store.API = (*Client)(nil)

// baseURL's host is a placeholder: every connection goes to the socket.
const baseURL = "http://casfs"

// continueWait is how long an upload waits for the daemon's go-ahead
// (100 Continue) before sending its body anyway. The daemon sends it once
// the store starts reading, so an ingest refused early (a locked ref) costs
// no upload; a daemon that never answers is bounded by the caller's context.
const continueWait = 30 * time.Second

// maxErrorBody caps how much of an error response the client reads.
const maxErrorBody = 1 << 20

// Dial connects to the daemon at socketPath. When there is no socket, or
// nothing listens on it, the error wraps errdefs.ErrNotFound: the caller
// should open the store itself (embedded mode).
func Dial(socketPath string) (*Client, error) {
	return DialWith(socketPath, DialOptions{})
}

// DialOptions tune a Client.
type DialOptions struct {
	// Reconnect, when set, is called when a later connection finds nobody
	// listening on the socket (its server stopped since Dial): it makes a
	// server answer there again, or says why none can, and the connection
	// is tried once more. A client with Reconnect opens a connection per
	// request, so that no request is lost on a connection its stopping
	// server closed while idle.
	Reconnect func(ctx context.Context) error
}

// DialWith is Dial with options.
func DialWith(socketPath string, opts DialOptions) (*Client, error) {
	fi, err := os.Stat(socketPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no casfs daemon: %s does not exist: %w", socketPath, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("casfs daemon socket %s: %w", socketPath, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("no casfs daemon: %s is not a socket: %w", socketPath, errdefs.ErrNotFound)
	}
	c, err := net.DialTimeout("unix", socketPath, dialTimeout)
	if err != nil {
		return nil, dialError(socketPath, err)
	}
	c.Close()

	d := &net.Dialer{Timeout: dialTimeout}
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := d.DialContext(ctx, "unix", socketPath)
		if err != nil {
			return nil, dialError(socketPath, err)
		}
		return c, nil
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dial(ctx)
			if err == nil || opts.Reconnect == nil || !errors.Is(err, errdefs.ErrNotFound) {
				return c, err
			}
			if err := opts.Reconnect(ctx); err != nil {
				return nil, err
			}
			return dial(ctx)
		},
		Proxy:                 nil, // never route the socket through an HTTP proxy
		DisableCompression:    true,
		DisableKeepAlives:     opts.Reconnect != nil,
		MaxIdleConns:          8,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       30 * time.Second,
		ExpectContinueTimeout: continueWait,
	}
	return &Client{
		socket: socketPath,
		tr:     tr,
		hc: &http.Client{
			Transport: tr,
			// A redirect would turn a PUT into a GET; the API never sends one.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

func dialError(socketPath string, err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("no casfs daemon listens on %s: %w", socketPath, errdefs.ErrNotFound)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("casfs daemon on %s does not accept connections: %w", socketPath, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("connect to casfs daemon on %s: %w", socketPath, err)
}

// Close drops idle connections; calls after Close reconnect.
func (c *Client) Close() error {
	c.tr.CloseIdleConnections()
	return nil
}

// Socket is the path the client connects to.
func (c *Client) Socket() string { return c.socket }

// Remote reports whether s reaches its store through a socket (a Client, or
// a wrapper of one whose Socket is not empty) rather than in this process.
func Remote(s any) bool {
	r, ok := s.(interface{ Socket() string })
	return ok && r.Socket() != ""
}

// request is one API call.
type request struct {
	method, path string
	query        url.Values
	json         any       // encoded as the body when non-nil
	body         io.Reader // streamed as the body (Expect: 100-continue)
}

// do sends req and returns the response when its status is 2xx; any other
// status becomes the server's error.
func (c *Client) do(ctx context.Context, req request) (*http.Response, error) {
	u := baseURL + req.path
	if len(req.query) > 0 {
		u += "?" + req.query.Encode()
	}
	var body io.Reader
	var gate *gatedReader
	switch {
	case req.json != nil:
		b, err := json.Marshal(req.json)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s request: %w", req.method, req.path, err)
		}
		body = bytes.NewReader(b)
	case req.body != nil:
		gate = &gatedReader{r: req.body}
		body = gate
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v: %w", req.method, req.path, err, errdefs.ErrInvalidArgument)
	}
	switch {
	case req.json != nil:
		hr.Header.Set("Content-Type", "application/json")
	case gate != nil:
		hr.Header.Set("Content-Type", "application/octet-stream")
		hr.Header.Set("Expect", "100-continue")
		hr.ContentLength = -1 // unknown: stream it chunked
	}
	resp, err := c.hc.Do(hr)
	if gate != nil {
		// The transport may still hold the body in another goroutine;
		// from here on it must not take more of the caller's reader.
		gate.Close()
	}
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, c.responseError(resp)
}

// transportError classifies a failure to talk to the daemon at all.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		// The daemon went away since Dial: for this call it is unavailable.
		return fmt.Errorf("%v: %w", err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("casfs daemon on %s: %v: %w", c.socket, err, errdefs.ErrUnavailable)
}

// responseError turns an error response into the store error it carries.
func (c *Client) responseError(resp *http.Response) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body ErrorBody
	if err == nil {
		err = json.Unmarshal(data, &body)
	}
	if err != nil || body.Error == "" {
		return fmt.Errorf("casfs daemon on %s answered %s without an error message: %w", c.socket, resp.Status, errdefs.ErrUnavailable)
	}
	return remoteError(body)
}

// call sends a request and decodes a JSON response into out (when non-nil).
func (c *Client) call(ctx context.Context, req request, out any) error {
	resp, err := c.do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body) // lets the connection be reused
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("casfs daemon on %s: bad %s %s response: %v: %w", c.socket, req.method, req.path, err, errdefs.ErrUnavailable)
	}
	return nil
}

// segment escapes one path segment; "." and ".." are escaped too, since a
// router would otherwise clean them away.
func segment(s string) string {
	switch s {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return url.PathEscape(s)
}

// gatedReader hands the caller's reader to the transport until closed.
// Close does not close the caller's reader (it may be stdin).
type gatedReader struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

var errBodyDetached = errors.New("request body detached: the call has returned")

func (g *gatedReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	closed, r := g.closed, g.r
	g.mu.Unlock()
	if closed {
		return 0, errBodyDetached
	}
	return r.Read(p)
}

func (g *gatedReader) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	return nil
}

// trailerError reads the Casfs-Error trailer of a finished data stream.
func trailerError(resp *http.Response) error {
	v := resp.Trailer.Get(errorTrailer)
	if v == "" {
		return nil
	}
	var body ErrorBody
	if err := json.Unmarshal([]byte(v), &body); err != nil || body.Error == "" {
		return fmt.Errorf("casfs daemon: unreadable stream error %q: %w", strings.TrimSpace(v), errdefs.ErrUnavailable)
	}
	return remoteError(body)
}

// stream copies a data response into w; a failure after the first byte
// arrives in the Casfs-Error trailer.
func (c *Client) stream(ctx context.Context, req request, w io.Writer) error {
	resp, err := c.do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	ew := &errWriter{w: w}
	if _, err := io.Copy(ew, resp.Body); err != nil {
		if ew.err != nil {
			return ew.err // the caller's writer failed, as it would embedded
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("casfs daemon on %s: %s %s: stream broke off: %v: %w", c.socket, req.method, req.path, err, errdefs.ErrUnavailable)
	}
	return trailerError(resp)
}

// errWriter remembers whether a copy failed on the writing side.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// progress reads an NDJSON progress stream: events go to fn in the order
// the daemon sent them, then the result is decoded into out (when non-nil)
// or the error returned.
func (c *Client) progress(ctx context.Context, req request, fn store.ProgressFunc, out any) error {
	resp, err := c.do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var line streamLine
		if err := dec.Decode(&line); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("stream ended without a result")
			}
			return fmt.Errorf("casfs daemon on %s: %s %s: %v: %w", c.socket, req.method, req.path, err, errdefs.ErrUnavailable)
		}
		switch {
		case line.ErrorBody != nil && line.Error != "":
			return remoteError(*line.ErrorBody)
		case line.Result != nil:
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(line.Result, out); err != nil {
				return fmt.Errorf("casfs daemon on %s: bad %s result: %v: %w", c.socket, req.path, err, errdefs.ErrUnavailable)
			}
			return nil
		case line.Event != nil && fn != nil:
			fn(*line.Event)
		}
	}
}
