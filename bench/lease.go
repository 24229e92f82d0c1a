package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/casfs/casfs/index"
	"github.com/opencontainers/go-digest"
)

// seedSmallBlobs writes n distinct small blobs and their records straight
// into a closed store (setup, not measured). `content import` is no use
// here: at this revision it takes about 14 ms a blob and fails with EMFILE
// at 10k blobs in one tar.
func seedSmallBlobs(root string, n int) error {
	dir := filepath.Join(root, "blobs", "sha256")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	db, err := index.Open(filepath.Join(root, "meta"))
	if err != nil {
		return err
	}
	defer db.Close()
	now := time.Now().UTC()
	var batch []index.Entry[index.Blob]
	for i := 0; i < n; i++ {
		data := []byte(fmt.Sprintf("small blob number %d\n", i))
		d := digest.FromBytes(data)
		if err := os.WriteFile(filepath.Join(dir, d.Encoded()), data, 0o444); err != nil {
			return err
		}
		batch = append(batch, index.Entry[index.Blob]{Key: d.String(), Value: index.Blob{
			Digest: d, Size: int64(len(data)), MediaType: "application/octet-stream", CreatedAt: now, UpdatedAt: now}})
		if len(batch) == 2000 || i == n-1 {
			if err := db.Blobs().PutMany(context.Background(), batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

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
