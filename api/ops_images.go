package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/casfs/casfs/store"
)

// Image operations (store.Images). Image names carry slashes, colons and
// '@', so single-image routes take the name as a query parameter rather
// than as path segments.

var opListImages = jsonOp(route{method: http.MethodGet, pattern: "/v1/images", doc: "ListImages -> [ImageInfo]"},
	func(ctx context.Context, s store.API, _ none) ([]store.ImageInfo, error) { return s.ListImages(ctx) })

func (c *Client) ListImages(ctx context.Context) ([]store.ImageInfo, error) {
	return opListImages.call(ctx, c, none{})
}

var opGetImage = jsonOp(route{method: http.MethodGet, pattern: "/v1/images/by-name", docPath: "/v1/images/by-name?name=R[&platform=P]", doc: "GetImage -> ImageDetail"},
	func(ctx context.Context, s store.API, q imageQuery) (store.ImageDetail, error) {
		return s.GetImage(ctx, q.name, q.platform)
	})

func (c *Client) GetImage(ctx context.Context, ref, platform string) (store.ImageDetail, error) {
	return opGetImage.call(ctx, c, imageQuery{ref, platform})
}

var opRemoveImage = jsonOp(route{method: http.MethodDelete, pattern: "/v1/images/by-name", docPath: "/v1/images/by-name?name=R", doc: "RemoveImage -> 204"},
	func(ctx context.Context, s store.API, q nameQuery) (none, error) {
		return none{}, s.RemoveImage(ctx, q.name)
	})

func (c *Client) RemoveImage(ctx context.Context, ref string) error {
	_, err := opRemoveImage.call(ctx, c, nameQuery{ref})
	return err
}

var opPull = progressOp(route{method: http.MethodPost, pattern: "/v1/images/pull",
	doc: `Pull; body {"ref":R,"options":PullOptions} -> progress stream, result ImageInfo`},
	func(ctx context.Context, s store.API, req pullRequest, fn store.ProgressFunc) (store.ImageInfo, error) {
		req.Options.Progress = fn
		return s.Pull(ctx, req.Ref, req.Options)
	})

func (c *Client) Pull(ctx context.Context, ref string, opts store.PullOptions) (store.ImageInfo, error) {
	return opPull.call(ctx, c, pullRequest{Ref: ref, Options: opts}, opts.Progress)
}

var opPush = progressOp(route{method: http.MethodPost, pattern: "/v1/images/push",
	doc: `Push; body {"ref":R,"remote":R2,"options":PushOptions} -> progress stream, result {}`},
	func(ctx context.Context, s store.API, req pushRequest, fn store.ProgressFunc) (none, error) {
		req.Options.Progress = fn
		return none{}, s.Push(ctx, req.Ref, req.Remote, req.Options)
	})

func (c *Client) Push(ctx context.Context, ref, remote string, opts store.PushOptions) error {
	_, err := opPush.call(ctx, c, pushRequest{Ref: ref, Remote: remote, Options: opts}, opts.Progress)
	return err
}

var opTagImage = jsonOp(route{method: http.MethodPost, pattern: "/v1/images/tag", doc: `TagImage; body {"source":R,"targets":[R]} -> 204`},
	func(ctx context.Context, s store.API, req tagRequest) (none, error) {
		return none{}, s.TagImage(ctx, req.Source, req.Targets)
	})

func (c *Client) TagImage(ctx context.Context, src string, dsts []string) error {
	_, err := opTagImage.call(ctx, c, tagRequest{Source: src, Targets: dsts})
	return err
}

var opLabelImage = jsonOp(route{method: http.MethodPost, pattern: "/v1/images/labels",
	doc: `LabelImage; body {"name":R,"set":{k:v},"delete":[k]} -> ImageInfo`},
	func(ctx context.Context, s store.API, req imageLabelsRequest) (store.ImageInfo, error) {
		return s.LabelImage(ctx, req.Name, req.Set, req.Delete)
	})

func (c *Client) LabelImage(ctx context.Context, ref string, set map[string]string, del []string) (store.ImageInfo, error) {
	return opLabelImage.call(ctx, c, imageLabelsRequest{Name: ref, Set: set, Delete: del})
}

var opConvertImage = jsonOp(route{method: http.MethodPost, pattern: "/v1/images/convert",
	doc: `ConvertImage; body {"source":R,"target":R,"options":ConvertOptions} -> ImageInfo`},
	func(ctx context.Context, s store.API, req convertRequest) (store.ImageInfo, error) {
		return s.ConvertImage(ctx, req.Source, req.Target, req.Options)
	})

func (c *Client) ConvertImage(ctx context.Context, src, dst string, opts store.ConvertOptions) (store.ImageInfo, error) {
	return opConvertImage.call(ctx, c, convertRequest{Source: src, Target: dst, Options: opts})
}

// nameQuery is an image name as the query's name; the server requires it.
// imageQuery names an image and, optionally, the platform to show.
type imageQuery struct{ name, platform string }

func (q imageQuery) wire() (wire, error) {
	v := url.Values{"name": {q.name}}
	if q.platform != "" {
		v.Set("platform", q.platform)
	}
	return wire{query: v}, nil
}

func (q *imageQuery) bind(_ *Server, _ http.ResponseWriter, r *http.Request) (err error) {
	q.platform = r.URL.Query().Get("platform")
	q.name, err = requireQuery(r, "name")
	return err
}

type nameQuery struct{ name string }

func (q nameQuery) wire() (wire, error) { return wire{query: url.Values{"name": {q.name}}}, nil }

func (q *nameQuery) bind(_ *Server, _ http.ResponseWriter, r *http.Request) (err error) {
	q.name, err = requireQuery(r, "name")
	return err
}
