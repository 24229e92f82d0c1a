package api

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// The fake store has no leases or collector: its Garbage half answers
// ErrNotImplemented (the gc routes are tested against the real store).

func (f *fakeStore) ListLeases(context.Context) ([]store.LeaseInfo, error) {
	return nil, fmt.Errorf("fake store: leases: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) CreateLease(context.Context, store.LeaseOptions) (store.LeaseInfo, error) {
	return store.LeaseInfo{}, fmt.Errorf("fake store: leases: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) RemoveLease(context.Context, string) error {
	return fmt.Errorf("fake store: leases: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) Collect(context.Context, store.CollectOptions) (store.GCReport, error) {
	return store.GCReport{}, fmt.Errorf("fake store: gc: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) PruneImages(context.Context, store.ImagePruneOptions) (store.GCReport, error) {
	return store.GCReport{}, fmt.Errorf("fake store: gc: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) ForceRemoveContent(ctx context.Context, d digest.Digest) error {
	return f.RemoveContent(ctx, d)
}
