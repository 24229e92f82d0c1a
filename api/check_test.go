package api

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// The check route carries options and report both ways: a corrupt blob is
// found through the socket, and --repair (no image needs it) removes it.
func TestCheckOverSocket(t *testing.T) {
	ctx := context.Background()
	be := localBackend()
	s := be.open(t)
	ts := serve(t, s)
	data := []byte("check me")
	d := digest.FromBytes(data)
	if _, err := ts.client.Ingest(ctx, "r", bytes.NewReader(data), store.IngestOptions{Expected: d}); err != nil {
		t.Fatal(err)
	}
	rep, err := ts.client.Check(ctx, store.StoreCheckOptions{})
	if err != nil || len(rep.Problems) != 0 || rep.Checked.Blobs != 1 || rep.Checked.Files != 1 {
		t.Fatalf("clean check: %+v %v", rep, err)
	}
	be.corrupt(t, s, d)
	rep, err = ts.client.Check(ctx, store.StoreCheckOptions{})
	if err != nil || len(rep.Problems) != 1 || rep.Problems[0].Name != d.String() || rep.Problems[0].Kind != "blob" {
		t.Fatalf("check of a corrupt blob: %+v %v", rep, err)
	}
	rep, err = ts.client.Check(ctx, store.StoreCheckOptions{Repair: true})
	if err != nil || len(rep.Problems) != 0 || len(rep.Repaired) != 1 {
		t.Fatalf("repair: %+v %v", rep, err)
	}
	if _, err := ts.client.ContentInfo(ctx, d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("repaired corrupt blob still listed: %v", err)
	}
}
