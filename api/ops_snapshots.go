package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/casfs/casfs/store"
)

// Snapshots, image mounts and image checks (store.Snapshots). Snapshot keys
// go in the query, like image names, since they hold colons.

// mountRequest is the body of POST /v1/images/mount.
type mountRequest struct {
	Ref     string             `json:"ref"`
	Target  string             `json:"target"` // absolute, as the daemon sees it
	Options store.MountOptions `json:"options"`
}

// unmountRequest is the body of POST /v1/images/unmount.
type unmountRequest struct {
	Target string `json:"target"`
	Remove bool   `json:"remove,omitempty"`
}

// checkRequest is the body of POST /v1/images/check.
type checkRequest struct {
	Ref     string             `json:"ref"`
	Options store.CheckOptions `json:"options"`
}

var opListSnapshots = jsonOp(route{method: http.MethodGet, pattern: "/v1/snapshots", doc: "ListSnapshots -> [SnapshotInfo]"},
	func(ctx context.Context, s store.API, _ none) ([]store.SnapshotInfo, error) {
		return nonEmpty(s.ListSnapshots(ctx))
	})

func (c *Client) ListSnapshots(ctx context.Context) ([]store.SnapshotInfo, error) {
	return opListSnapshots.call(ctx, c, none{})
}

var opRemoveSnapshot = jsonOp(route{method: http.MethodDelete, pattern: "/v1/snapshots/by-key", docPath: "/v1/snapshots/by-key?key=K", doc: "RemoveSnapshot -> 204"},
	func(ctx context.Context, s store.API, q keyQuery) (none, error) {
		return none{}, s.RemoveSnapshot(ctx, q.key)
	})

func (c *Client) RemoveSnapshot(ctx context.Context, key string) error {
	_, err := opRemoveSnapshot.call(ctx, c, keyQuery{key})
	return err
}

var opSnapshotUsage = jsonOp(route{method: http.MethodGet, pattern: "/v1/snapshots/usage", docPath: "/v1/snapshots/usage?key=K", doc: "SnapshotUsage (no key: all) -> [SnapshotUsage]"},
	func(ctx context.Context, s store.API, q optionalKeyQuery) ([]store.SnapshotUsage, error) {
		return nonEmpty(s.SnapshotUsage(ctx, q.key))
	})

func (c *Client) SnapshotUsage(ctx context.Context, key string) ([]store.SnapshotUsage, error) {
	return opSnapshotUsage.call(ctx, c, optionalKeyQuery{key: key})
}

var opListImageMounts = jsonOp(route{method: http.MethodGet, pattern: "/v1/images/mounts", doc: "ListImageMounts -> [ImageMount]"},
	func(ctx context.Context, s store.API, _ none) ([]store.ImageMount, error) {
		return nonEmpty(s.ListImageMounts(ctx))
	})

func (c *Client) ListImageMounts(ctx context.Context) ([]store.ImageMount, error) {
	return opListImageMounts.call(ctx, c, none{})
}

var opMountImage = jsonOp(route{method: http.MethodPost, pattern: "/v1/images/mount",
	doc: `MountImage; body {"ref":R,"target":T,"options":MountOptions} -> ImageMount`},
	func(ctx context.Context, s store.API, req mountRequest) (store.ImageMount, error) {
		return s.MountImage(ctx, req.Ref, req.Target, req.Options)
	})

func (c *Client) MountImage(ctx context.Context, ref, target string, opts store.MountOptions) (store.ImageMount, error) {
	return opMountImage.call(ctx, c, mountRequest{Ref: ref, Target: target, Options: opts})
}

var opUnmountImage = jsonOp(route{method: http.MethodPost, pattern: "/v1/images/unmount",
	doc: `UnmountImage; body {"target":T,"remove":B} -> ImageMount`},
	func(ctx context.Context, s store.API, req unmountRequest) (store.ImageMount, error) {
		return s.UnmountImage(ctx, req.Target, req.Remove)
	})

func (c *Client) UnmountImage(ctx context.Context, target string, remove bool) (store.ImageMount, error) {
	return opUnmountImage.call(ctx, c, unmountRequest{Target: target, Remove: remove})
}

var opCheckImage = jsonOp(route{method: http.MethodPost, pattern: "/v1/images/check",
	doc: `CheckImage; body {"ref":R,"options":CheckOptions} -> CheckReport`},
	func(ctx context.Context, s store.API, req checkRequest) (store.CheckReport, error) {
		return s.CheckImage(ctx, req.Ref, req.Options)
	})

func (c *Client) CheckImage(ctx context.Context, ref string, opts store.CheckOptions) (store.CheckReport, error) {
	return opCheckImage.call(ctx, c, checkRequest{Ref: ref, Options: opts})
}

// keyQuery is a snapshot key as the query's key; the server requires it.
type keyQuery struct{ key string }

func (q keyQuery) wire() (wire, error) { return wire{query: url.Values{"key": {q.key}}}, nil }

func (q *keyQuery) bind(_ *Server, _ http.ResponseWriter, r *http.Request) (err error) {
	q.key, err = requireQuery(r, "key")
	return err
}

// optionalKeyQuery is a snapshot key that may be absent (meaning all).
type optionalKeyQuery struct{ key string }

func (q optionalKeyQuery) wire() (wire, error) {
	if q.key == "" {
		return wire{}, nil
	}
	return wire{query: url.Values{"key": {q.key}}}, nil
}

func (q *optionalKeyQuery) bind(_ *Server, _ http.ResponseWriter, r *http.Request) error {
	q.key = r.URL.Query().Get("key")
	return nil
}
