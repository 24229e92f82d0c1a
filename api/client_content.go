package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// contentPath is /v1/content/<digest><suffix>. An empty digest has no path
// segment to travel in, so it is refused here rather than misrouted.
func contentPath(d digest.Digest, suffix string) (string, error) {
	if d == "" {
		return "", fmt.Errorf("blob digest is empty: %w", errdefs.ErrInvalidArgument)
	}
	return "/v1/content/" + segment(string(d)) + suffix, nil
}

func (c *Client) ResolveDigest(ctx context.Context, s string) (digest.Digest, error) {
	var resp ResolveResponse
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/resolve", query: url.Values{"digest": {s}}}, &resp)
	return resp.Digest, err
}

// Ingest streams r to the daemon. Unlike embedded mode, opts.Resumed is
// called after the upload, with the offset the daemon reports: the daemon
// skips the bytes it already has, as the embedded store does.
func (c *Client) Ingest(ctx context.Context, ref string, r io.Reader, opts store.IngestOptions) (store.ContentInfo, error) {
	q := url.Values{}
	if opts.Expected != "" {
		q.Set("expected", string(opts.Expected))
	}
	if opts.Size != 0 {
		q.Set("size", strconv.FormatInt(opts.Size, 10))
	}
	var resp IngestResponse
	err := c.call(ctx, request{method: http.MethodPut, path: "/v1/ingests/" + segment(ref), query: q, body: r}, &resp)
	if err != nil {
		return store.ContentInfo{}, err
	}
	if resp.ResumedAt != nil && opts.Resumed != nil {
		opts.Resumed(*resp.ResumedAt)
	}
	if resp.Restarted != nil && opts.Restarted != nil {
		opts.Restarted(resp.Restarted.Stored, resp.Restarted.Kept)
	}
	return resp.Info, nil
}

func (c *Client) ListContent(ctx context.Context) ([]store.ContentInfo, error) {
	var out []store.ContentInfo
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/content"}, &out)
	return out, err
}

func (c *Client) ContentInfo(ctx context.Context, d digest.Digest) (store.ContentInfo, error) {
	p, err := contentPath(d, "")
	if err != nil {
		return store.ContentInfo{}, err
	}
	var out store.ContentInfo
	err = c.call(ctx, request{method: http.MethodGet, path: p}, &out)
	return out, err
}

func (c *Client) ReadContent(ctx context.Context, d digest.Digest, w io.Writer) error {
	p, err := contentPath(d, "/data")
	if err != nil {
		return err
	}
	return c.stream(ctx, request{method: http.MethodGet, path: p}, w)
}

func (c *Client) RemoveContent(ctx context.Context, d digest.Digest) error {
	p, err := contentPath(d, "")
	if err != nil {
		return err
	}
	return c.call(ctx, request{method: http.MethodDelete, path: p}, nil)
}

func (c *Client) VerifyContent(ctx context.Context, ds []digest.Digest) ([]store.Problem, error) {
	var resp VerifyResponse
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/content/verify", json: VerifyRequest{Digests: ds}}, &resp)
	return resp.Problems, err
}

func (c *Client) LabelContent(ctx context.Context, d digest.Digest, set map[string]string, del []string) (store.ContentInfo, error) {
	p, err := contentPath(d, "/labels")
	if err != nil {
		return store.ContentInfo{}, err
	}
	var out store.ContentInfo
	err = c.call(ctx, request{method: http.MethodPatch, path: p, json: LabelsRequest{Set: set, Delete: del}}, &out)
	return out, err
}

func (c *Client) ActiveIngests(ctx context.Context) ([]store.IngestStatus, error) {
	var out []store.IngestStatus
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/ingests"}, &out)
	return out, err
}

func (c *Client) ExportContent(ctx context.Context, w io.Writer, ds []digest.Digest) error {
	q := url.Values{}
	for _, d := range ds {
		q.Add("digest", string(d))
	}
	return c.stream(ctx, request{method: http.MethodGet, path: "/v1/export", query: q}, w)
}

func (c *Client) ImportContent(ctx context.Context, r io.Reader) ([]store.ContentInfo, error) {
	var out []store.ContentInfo
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/import", body: r}, &out)
	return out, err
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
