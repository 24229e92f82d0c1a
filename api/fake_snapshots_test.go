package api

import (
	"context"
	"fmt"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// The fake store has no snapshots: its Snapshots half answers
// ErrNotImplemented (the snapshot routes are tested against the real store).

func (f *fakeStore) ListSnapshots(context.Context) ([]store.SnapshotInfo, error) {
	return nil, fmt.Errorf("fake store: snapshots: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) RemoveSnapshot(context.Context, string) error {
	return fmt.Errorf("fake store: snapshots: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) SnapshotUsage(context.Context, string) ([]store.SnapshotUsage, error) {
	return nil, fmt.Errorf("fake store: snapshots: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) MountImage(context.Context, string, string, store.MountOptions) (store.ImageMount, error) {
	return store.ImageMount{}, fmt.Errorf("fake store: image mount: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) UnmountImage(context.Context, string, bool) (store.ImageMount, error) {
	return store.ImageMount{}, fmt.Errorf("fake store: image mount: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) ListImageMounts(context.Context) ([]store.ImageMount, error) {
	return nil, fmt.Errorf("fake store: image mount: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) CheckImage(context.Context, string, store.CheckOptions) (store.CheckReport, error) {
	return store.CheckReport{}, fmt.Errorf("fake store: image check: %w", errdefs.ErrNotImplemented)
}
