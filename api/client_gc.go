package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/store"
)

func (c *Client) ListLeases(ctx context.Context) ([]store.LeaseInfo, error) {
	var out []store.LeaseInfo
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/leases"}, &out)
	return out, err
}

func (c *Client) CreateLease(ctx context.Context, opts store.LeaseOptions) (store.LeaseInfo, error) {
	var out store.LeaseInfo
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/leases", json: opts}, &out)
	return out, err
}

func (c *Client) RemoveLease(ctx context.Context, id string) error {
	// Checked here too: an empty or odd id has no path segment to travel in.
	if err := index.ValidateLeaseID(id); err != nil {
		return err
	}
	return c.call(ctx, request{method: http.MethodDelete, path: "/v1/leases/" + segment(id)}, nil)
}

func (c *Client) Collect(ctx context.Context, opts store.CollectOptions) (store.GCReport, error) {
	var out store.GCReport
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/gc/collect", json: opts}, &out)
	return out, err
}

func (c *Client) PruneImages(ctx context.Context, opts store.ImagePruneOptions) (store.GCReport, error) {
	var out store.GCReport
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/gc/images", json: opts}, &out)
	return out, err
}

func (c *Client) ForceRemoveContent(ctx context.Context, d digest.Digest) error {
	if d == "" {
		return fmt.Errorf("blob digest is empty: %w", errdefs.ErrInvalidArgument)
	}
	return c.call(ctx, request{method: http.MethodDelete, path: "/v1/gc/content/" + segment(string(d))}, nil)
}
