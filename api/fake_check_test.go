package api

import (
	"context"
	"fmt"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// The fake store has no whole-store check (the route is tested against the real store).
func (f *fakeStore) Check(context.Context, store.StoreCheckOptions) (store.StoreCheckReport, error) {
	return store.StoreCheckReport{}, fmt.Errorf("fake store: check: %w", errdefs.ErrNotImplemented)
}
