package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// Content operations (store.Content), and the ping.

var _ = jsonOp(route{method: http.MethodGet, pattern: "/v1/ping", doc: `{"api":"v1"}`},
	func(context.Context, store.API, none) (map[string]string, error) {
		return map[string]string{"api": "v1"}, nil
	})

var opResolve = jsonOp(route{method: http.MethodGet, pattern: "/v1/resolve", docPath: "/v1/resolve?digest=S",
	doc: `ResolveDigest(S) -> {"digest":D}`},
	func(ctx context.Context, s store.API, q resolveQuery) (resolveResponse, error) {
		d, err := s.ResolveDigest(ctx, q.s)
		return resolveResponse{Digest: d}, err
	})

func (c *Client) ResolveDigest(ctx context.Context, s string) (digest.Digest, error) {
	resp, err := opResolve.call(ctx, c, resolveQuery{s})
	return resp.Digest, err
}

var opListContent = jsonOp(route{method: http.MethodGet, pattern: "/v1/content", doc: "ListContent -> [ContentInfo]"},
	func(ctx context.Context, s store.API, _ none) ([]store.ContentInfo, error) { return s.ListContent(ctx) })

func (c *Client) ListContent(ctx context.Context) ([]store.ContentInfo, error) {
	return opListContent.call(ctx, c, none{})
}

var opContentInfo = jsonOp(route{method: http.MethodGet, pattern: "/v1/content/{digest}", doc: "ContentInfo -> ContentInfo"},
	func(ctx context.Context, s store.API, p digestPath) (store.ContentInfo, error) {
		return s.ContentInfo(ctx, p.d)
	})

func (c *Client) ContentInfo(ctx context.Context, d digest.Digest) (store.ContentInfo, error) {
	return opContentInfo.call(ctx, c, digestPath{d})
}

var opRemoveContent = jsonOp(route{method: http.MethodDelete, pattern: "/v1/content/{digest}", doc: "RemoveContent -> 204"},
	func(ctx context.Context, s store.API, p digestPath) (none, error) {
		return none{}, s.RemoveContent(ctx, p.d)
	})

func (c *Client) RemoveContent(ctx context.Context, d digest.Digest) error {
	_, err := opRemoveContent.call(ctx, c, digestPath{d})
	return err
}

var opReadContent = dataOutOp(route{method: http.MethodGet, pattern: "/v1/content/{digest}/data", doc: "ReadContent -> the blob's bytes"},
	"application/octet-stream",
	func(ctx context.Context, s store.API, p digestPath, w io.Writer) error {
		return s.ReadContent(ctx, p.d, w)
	})

func (c *Client) ReadContent(ctx context.Context, d digest.Digest, w io.Writer) error {
	return opReadContent.call(ctx, c, digestPath{d}, w)
}

var opLabelContent = jsonOp(route{method: http.MethodPatch, pattern: "/v1/content/{digest}/labels",
	doc: `LabelContent; body {"set":{k:v},"delete":[k]} -> ContentInfo`},
	func(ctx context.Context, s store.API, p labelsCall) (store.ContentInfo, error) {
		return s.LabelContent(ctx, p.d, p.body.Set, p.body.Delete)
	})

func (c *Client) LabelContent(ctx context.Context, d digest.Digest, set map[string]string, del []string) (store.ContentInfo, error) {
	return opLabelContent.call(ctx, c, labelsCall{digestPath{d}, labelsRequest{Set: set, Delete: del}})
}

var opVerifyContent = jsonOp(route{method: http.MethodPost, pattern: "/v1/content/verify",
	doc: `VerifyContent; body {"digests":[D]} (empty: all) -> {"problems":[Problem]}`},
	func(ctx context.Context, s store.API, req verifyRequest) (verifyResponse, error) {
		problems, err := s.VerifyContent(ctx, req.Digests)
		return verifyResponse{Problems: problems}, err
	})

func (c *Client) VerifyContent(ctx context.Context, ds []digest.Digest) ([]store.Problem, error) {
	resp, err := opVerifyContent.call(ctx, c, verifyRequest{Digests: ds})
	return resp.Problems, err
}

var opFetchContent = progressOp(route{method: http.MethodPost, pattern: "/v1/content/fetch",
	doc: `FetchContent; body {"ref":R,"options":PullOptions} -> progress stream, result Descriptor`},
	func(ctx context.Context, s store.API, req pullRequest, fn store.ProgressFunc) (ocispec.Descriptor, error) {
		req.Options.Progress = fn
		return s.FetchContent(ctx, req.Ref, req.Options)
	})

func (c *Client) FetchContent(ctx context.Context, ref string, opts store.PullOptions) (ocispec.Descriptor, error) {
	return opFetchContent.call(ctx, c, pullRequest{Ref: ref, Options: opts}, opts.Progress)
}

var opActiveIngests = jsonOp(route{method: http.MethodGet, pattern: "/v1/ingests", doc: "ActiveIngests -> [IngestStatus]"},
	func(ctx context.Context, s store.API, _ none) ([]store.IngestStatus, error) {
		return s.ActiveIngests(ctx)
	})

func (c *Client) ActiveIngests(ctx context.Context) ([]store.IngestStatus, error) {
	return opActiveIngests.call(ctx, c, none{})
}

// opIngest streams the request body into the store; nothing is buffered.
var opIngest = dataInOp(route{method: http.MethodPut, pattern: "/v1/ingests/{ref...}", status: http.StatusCreated,
	docPath: "/v1/ingests/{ref}?expected=D&size=N", doc: `Ingest; body is the data -> 201 {"info":ContentInfo,"resumedAt":N}`},
	func(ctx context.Context, s store.API, p ingestQuery, body io.Reader) (ingestResponse, error) {
		var resp ingestResponse
		opts := store.IngestOptions{Expected: p.expected, Size: p.size}
		opts.Resumed = func(off int64) { resp.ResumedAt = &off }
		opts.Restarted = func(stored, kept int64) { resp.Restarted = &ingestRestart{Stored: stored, Kept: kept} }
		info, err := s.Ingest(ctx, p.ref, body, opts)
		resp.Info = info
		return resp, err
	})

// Ingest streams r to the daemon. Unlike embedded mode, opts.Resumed is
// called after the upload, with the offset the daemon reports: the daemon
// skips the bytes it already has, as the embedded store does.
func (c *Client) Ingest(ctx context.Context, ref string, r io.Reader, opts store.IngestOptions) (store.ContentInfo, error) {
	resp, err := opIngest.call(ctx, c, ingestQuery{ref: ref, expected: opts.Expected, size: opts.Size}, r)
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

var opExportContent = dataOutOp(route{method: http.MethodGet, pattern: "/v1/export", docPath: "/v1/export?digest=D&digest=...",
	doc: "ExportContent (no digest: all) -> application/x-tar"},
	"application/x-tar",
	func(ctx context.Context, s store.API, q digestsQuery, w io.Writer) error {
		return s.ExportContent(ctx, w, q)
	})

func (c *Client) ExportContent(ctx context.Context, w io.Writer, ds []digest.Digest) error {
	return opExportContent.call(ctx, c, digestsQuery(ds), w)
}

var opImportContent = dataInOp(route{method: http.MethodPost, pattern: "/v1/import", doc: "ImportContent; body is the tar -> [ContentInfo]"},
	func(ctx context.Context, s store.API, _ none, body io.Reader) ([]store.ContentInfo, error) {
		return s.ImportContent(ctx, body)
	})

func (c *Client) ImportContent(ctx context.Context, r io.Reader) ([]store.ContentInfo, error) {
	return opImportContent.call(ctx, c, none{}, r)
}

// digestPath is a request naming one blob in its path. The server passes
// the digest to the store unchecked, so that a bad one fails with the
// store's own message, as in embedded mode.
type digestPath struct{ d digest.Digest }

func (p digestPath) wire() (wire, error) {
	if p.d == "" {
		return wire{}, errEmptyDigest()
	}
	return wire{path: map[string]string{"digest": string(p.d)}}, nil
}

func (p *digestPath) bind(_ *Server, _ http.ResponseWriter, r *http.Request) error {
	p.d = digest.Digest(r.PathValue("digest"))
	return nil
}

// labelsCall is a blob in the path and a labelsRequest as the body.
type labelsCall struct {
	digestPath
	body labelsRequest
}

func (p labelsCall) wire() (wire, error) {
	w, err := p.digestPath.wire()
	w.json = p.body
	return w, err
}

func (p *labelsCall) bind(srv *Server, w http.ResponseWriter, r *http.Request) error {
	p.digestPath.bind(srv, w, r)
	return srv.decodeJSON(w, r, &p.body)
}

// resolveQuery is what the user typed for a digest, as the query's digest.
type resolveQuery struct{ s string }

func (q resolveQuery) wire() (wire, error) { return wire{query: url.Values{"digest": {q.s}}}, nil }

func (q *resolveQuery) bind(_ *Server, _ http.ResponseWriter, r *http.Request) (err error) {
	q.s, err = requireQuery(r, "digest")
	return err
}

// digestsQuery names blobs as repeated digest parameters.
type digestsQuery []digest.Digest

func (q digestsQuery) wire() (wire, error) {
	v := url.Values{}
	for _, d := range q {
		v.Add("digest", string(d))
	}
	return wire{query: v}, nil
}

func (q *digestsQuery) bind(_ *Server, _ http.ResponseWriter, r *http.Request) error {
	for _, s := range r.URL.Query()["digest"] {
		*q = append(*q, digest.Digest(s))
	}
	return nil
}

// ingestQuery is an ingest's ref (one path segment) and expectations.
type ingestQuery struct {
	ref      string
	expected digest.Digest
	size     int64
}

func (q ingestQuery) wire() (wire, error) {
	v := url.Values{}
	if q.expected != "" {
		v.Set("expected", string(q.expected))
	}
	if q.size != 0 {
		v.Set("size", strconv.FormatInt(q.size, 10))
	}
	return wire{path: map[string]string{"ref": q.ref}, query: v}, nil
}

func (q *ingestQuery) bind(_ *Server, _ http.ResponseWriter, r *http.Request) error {
	v := r.URL.Query()
	q.ref, q.expected = r.PathValue("ref"), digest.Digest(v.Get("expected"))
	if s := v.Get("size"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("query parameter size=%q is not a byte count: %w", s, errdefs.ErrInvalidArgument)
		}
		q.size = n
	}
	return nil
}
