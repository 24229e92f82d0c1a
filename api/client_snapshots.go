package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/casfs/casfs/store"
)

func (c *Client) ListSnapshots(ctx context.Context) ([]store.SnapshotInfo, error) {
	var out []store.SnapshotInfo
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/snapshots"}, &out)
	return out, err
}

func (c *Client) RemoveSnapshot(ctx context.Context, key string) error {
	return c.call(ctx, request{method: http.MethodDelete, path: "/v1/snapshots/by-key", query: url.Values{"key": {key}}}, nil)
}

func (c *Client) SnapshotUsage(ctx context.Context, key string) ([]store.SnapshotUsage, error) {
	var out []store.SnapshotUsage
	var q url.Values
	if key != "" {
		q = url.Values{"key": {key}}
	}
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/snapshots/usage", query: q}, &out)
	return out, err
}

func (c *Client) MountImage(ctx context.Context, ref, target string, opts store.MountOptions) (store.ImageMount, error) {
	var out store.ImageMount
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/images/mount", json: MountRequest{Ref: ref, Target: target, Options: opts}}, &out)
	return out, err
}

func (c *Client) UnmountImage(ctx context.Context, target string, remove bool) (store.ImageMount, error) {
	var out store.ImageMount
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/images/unmount", json: UnmountRequest{Target: target, Remove: remove}}, &out)
	return out, err
}

func (c *Client) ListImageMounts(ctx context.Context) ([]store.ImageMount, error) {
	var out []store.ImageMount
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/images/mounts"}, &out)
	return out, err
}

func (c *Client) CheckImage(ctx context.Context, ref string, opts store.CheckOptions) (store.CheckReport, error) {
	var out store.CheckReport
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/images/check", json: CheckRequest{Ref: ref, Options: opts}}, &out)
	return out, err
}
