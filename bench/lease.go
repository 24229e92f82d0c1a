package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/casfs/casfs/index"
	"github.com/opencontainers/go-digest"
)

// leaseHalf writes leases straight into a closed store's index that hold
// every other blob, so that a collection must keep exactly half.
func leaseHalf(root string, n int) error {
	ctx := context.Background()
	db, err := index.Open(filepath.Join(root, "meta"))
	if err != nil {
		return err
	}
	defer db.Close()
	var all []digest.Digest
	if err := db.Blobs().List(ctx, "", func(_ string, b index.Blob) error {
		all = append(all, b.Digest)
		return nil
	}); err != nil {
		return err
	}
	if len(all) != n {
		return fmt.Errorf("index has %d blobs, expected %d", len(all), n)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	var held []digest.Digest
	for i := 0; i < len(all); i += 2 {
		held = append(held, all[i])
	}
	// 1000 blobs a lease keeps each record small.
	for i := 0; i < len(held); i += 1000 {
		id := fmt.Sprintf("bench-%05d", i/1000)
		l := index.Lease{ID: id, CreatedAt: time.Now().UTC(), Blobs: held[i:min(i+1000, len(held))]}
		if err := db.Leases().Put(ctx, id, l); err != nil {
			return err
		}
	}
	return nil
}
