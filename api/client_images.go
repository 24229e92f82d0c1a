package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

func (c *Client) Pull(ctx context.Context, ref string, opts store.PullOptions) (store.ImageInfo, error) {
	var out store.ImageInfo
	err := c.progress(ctx, request{method: http.MethodPost, path: "/v1/images/pull", json: PullRequest{Ref: ref, Options: opts}}, opts.Progress, &out)
	return out, err
}

func (c *Client) FetchContent(ctx context.Context, ref string, opts store.PullOptions) (ocispec.Descriptor, error) {
	var out ocispec.Descriptor
	err := c.progress(ctx, request{method: http.MethodPost, path: "/v1/content/fetch", json: PullRequest{Ref: ref, Options: opts}}, opts.Progress, &out)
	return out, err
}

func (c *Client) Push(ctx context.Context, ref, remote string, opts store.PushOptions) error {
	return c.progress(ctx, request{method: http.MethodPost, path: "/v1/images/push", json: PushRequest{Ref: ref, Remote: remote, Options: opts}}, opts.Progress, nil)
}

func (c *Client) ListImages(ctx context.Context) ([]store.ImageInfo, error) {
	var out []store.ImageInfo
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/images"}, &out)
	return out, err
}

func (c *Client) GetImage(ctx context.Context, ref string) (store.ImageDetail, error) {
	var out store.ImageDetail
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/images/by-name", query: url.Values{"name": {ref}}}, &out)
	return out, err
}

func (c *Client) TagImage(ctx context.Context, src string, dsts []string) error {
	return c.call(ctx, request{method: http.MethodPost, path: "/v1/images/tag", json: TagRequest{Source: src, Targets: dsts}}, nil)
}

func (c *Client) RemoveImage(ctx context.Context, ref string) error {
	return c.call(ctx, request{method: http.MethodDelete, path: "/v1/images/by-name", query: url.Values{"name": {ref}}}, nil)
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
		var line StreamLine
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

func (c *Client) ConvertImage(ctx context.Context, src, dst string, opts store.ConvertOptions) (store.ImageInfo, error) {
	var out store.ImageInfo
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/images/convert", json: ConvertRequest{Source: src, Target: dst, Options: opts}}, &out)
	return out, err
}
