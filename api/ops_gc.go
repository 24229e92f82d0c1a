package api

import (
	"context"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/store"
)

// Leases and garbage collection (store.Garbage).

var opListLeases = jsonOp(route{method: http.MethodGet, pattern: "/v1/leases", doc: "ListLeases -> [LeaseInfo]"},
	func(ctx context.Context, s store.API, _ none) ([]store.LeaseInfo, error) { return s.ListLeases(ctx) })

func (c *Client) ListLeases(ctx context.Context) ([]store.LeaseInfo, error) {
	return opListLeases.call(ctx, c, none{})
}

var opCreateLease = jsonOp(route{method: http.MethodPost, pattern: "/v1/leases", status: http.StatusCreated,
	doc: "CreateLease; body LeaseOptions -> 201 LeaseInfo"},
	func(ctx context.Context, s store.API, opts store.LeaseOptions) (store.LeaseInfo, error) {
		return s.CreateLease(ctx, opts)
	})

func (c *Client) CreateLease(ctx context.Context, opts store.LeaseOptions) (store.LeaseInfo, error) {
	return opCreateLease.call(ctx, c, opts)
}

var opRemoveLease = jsonOp(route{method: http.MethodDelete, pattern: "/v1/leases/{id}", doc: "RemoveLease -> 204"},
	func(ctx context.Context, s store.API, p leasePath) (none, error) {
		return none{}, s.RemoveLease(ctx, p.id)
	})

func (c *Client) RemoveLease(ctx context.Context, id string) error {
	_, err := opRemoveLease.call(ctx, c, leasePath{id})
	return err
}

var opCollect = jsonOp(route{method: http.MethodPost, pattern: "/v1/gc/collect", doc: "Collect; body CollectOptions -> GCReport"},
	func(ctx context.Context, s store.API, opts store.CollectOptions) (store.GCReport, error) {
		return s.Collect(ctx, opts)
	})

func (c *Client) Collect(ctx context.Context, opts store.CollectOptions) (store.GCReport, error) {
	return opCollect.call(ctx, c, opts)
}

var opPruneImages = jsonOp(route{method: http.MethodPost, pattern: "/v1/gc/images", doc: "PruneImages; body ImagePruneOptions -> GCReport"},
	func(ctx context.Context, s store.API, opts store.ImagePruneOptions) (store.GCReport, error) {
		return s.PruneImages(ctx, opts)
	})

func (c *Client) PruneImages(ctx context.Context, opts store.ImagePruneOptions) (store.GCReport, error) {
	return opPruneImages.call(ctx, c, opts)
}

var opForceRemoveContent = jsonOp(route{method: http.MethodDelete, pattern: "/v1/gc/content/{digest}", doc: "ForceRemoveContent -> 204"},
	func(ctx context.Context, s store.API, p digestPath) (none, error) {
		return none{}, s.ForceRemoveContent(ctx, p.d)
	})

func (c *Client) ForceRemoveContent(ctx context.Context, d digest.Digest) error {
	_, err := opForceRemoveContent.call(ctx, c, digestPath{d})
	return err
}

// leasePath is a lease id as one path segment.
type leasePath struct{ id string }

// wire checks the id here too: an empty or odd one has no path segment to
// travel in.
func (p leasePath) wire() (wire, error) {
	if err := index.ValidateLeaseID(p.id); err != nil {
		return wire{}, err
	}
	return wire{path: map[string]string{"id": p.id}}, nil
}

func (p *leasePath) bind(_ *Server, _ http.ResponseWriter, r *http.Request) error {
	p.id = r.PathValue("id")
	return nil
}
