package api

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/casfs/casfs/store"
)

// ExportRequest is the body of POST /v1/images/export.
type ExportRequest struct {
	Refs    []string            `json:"refs"`
	Options store.ExportOptions `json:"options"`
}

func (c *Client) ExportImages(ctx context.Context, w io.Writer, refs []string, opts store.ExportOptions) error {
	return c.stream(ctx, request{method: http.MethodPost, path: "/v1/images/export", json: ExportRequest{Refs: refs, Options: opts}}, w)
}

func (c *Client) ImportImages(ctx context.Context, r io.Reader, opts store.ImportOptions) ([]store.ImageInfo, error) {
	q := url.Values{}
	if opts.BaseName != "" {
		q.Set("base-name", opts.BaseName)
	}
	if opts.Digests {
		q.Set("digests", strconv.FormatBool(true))
	}
	if opts.NoUnpack {
		q.Set("no-unpack", strconv.FormatBool(true))
	}
	var out []store.ImageInfo
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/images/import", query: q, body: r}, &out)
	return out, err
}
