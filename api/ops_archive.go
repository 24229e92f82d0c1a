package api

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/casfs/casfs/store"
)

// Image export and import (store.Archives).

// exportRequest is the body of POST /v1/images/export.
type exportRequest struct {
	Refs    []string            `json:"refs"`
	Options store.ExportOptions `json:"options"`
}

// opExportImages answers with the archive as a data stream: the options
// travel in a JSON body because they may carry registry credentials.
var opExportImages = dataOutOp(route{method: http.MethodPost, pattern: "/v1/images/export",
	doc: `ExportImages; body {"refs":[R],"options":ExportOptions} -> application/x-tar`},
	"application/x-tar",
	func(ctx context.Context, s store.API, req exportRequest, w io.Writer) error {
		return s.ExportImages(ctx, w, req.Refs, req.Options)
	})

func (c *Client) ExportImages(ctx context.Context, w io.Writer, refs []string, opts store.ExportOptions) error {
	return opExportImages.call(ctx, c, exportRequest{Refs: refs, Options: opts}, w)
}

// opImportImages reads the archive from the request body; the options are
// query parameters.
var opImportImages = dataInOp(route{method: http.MethodPost, pattern: "/v1/images/import",
	docPath: "/v1/images/import?base-name=N&digests=true&no-unpack=true", doc: "ImportImages; body is the archive -> [ImageInfo]"},
	func(ctx context.Context, s store.API, q importQuery, body io.Reader) ([]store.ImageInfo, error) {
		return nonEmpty(s.ImportImages(ctx, body, store.ImportOptions(q)))
	})

func (c *Client) ImportImages(ctx context.Context, r io.Reader, opts store.ImportOptions) ([]store.ImageInfo, error) {
	return opImportImages.call(ctx, c, importQuery(opts), r)
}

type importQuery store.ImportOptions

func (q importQuery) wire() (wire, error) {
	v := url.Values{}
	if q.BaseName != "" {
		v.Set("base-name", q.BaseName)
	}
	if q.Digests {
		v.Set("digests", strconv.FormatBool(true))
	}
	if q.NoUnpack {
		v.Set("no-unpack", strconv.FormatBool(true))
	}
	return wire{query: v}, nil
}

func (q *importQuery) bind(_ *Server, _ http.ResponseWriter, r *http.Request) error {
	v := r.URL.Query()
	q.BaseName = v.Get("base-name")
	q.Digests, _ = strconv.ParseBool(v.Get("digests"))
	q.NoUnpack, _ = strconv.ParseBool(v.Get("no-unpack"))
	return nil
}
