package cas

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
)

func TestBatch(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	a, b := []byte("alpha"), []byte("beta")
	batch, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{a, b, a} {
		if err := batch.Add(ctx, bytes.NewReader(data), digest.FromBytes(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	c := []byte("gamma, held in memory")
	for _, data := range [][]byte{c, c, b} {
		if err := batch.AddBytes(ctx, data, digest.FromBytes(data)); err != nil {
			t.Fatal(err)
		}
	}
	// Bytes the caller verified are staged as they are.
	d := []byte("delta, verified by the caller")
	if err := batch.AddVerifiedBytes(ctx, d, digest.FromBytes(d)); err != nil {
		t.Fatal(err)
	}
	// Nothing is visible before Commit.
	if _, err := s.Info(ctx, digest.FromBytes(a)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("staged blob visible before commit: %v", err)
	}
	// A stale-batch sweep by another opener leaves a live batch alone.
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
	done, err := batch.Commit(ctx)
	if err != nil || len(done) != 4 {
		t.Fatalf("commit: %v %v", done, err)
	}
	for _, data := range [][]byte{a, b, c, d} {
		d := digest.FromBytes(data)
		if err := s.Verify(ctx, d); err != nil {
			t.Fatalf("verify %s: %v", d, err)
		}
		fi, _ := os.Stat(s.blobPath(d))
		if fi.Mode().Perm() != 0o444 {
			t.Fatalf("mode %v", fi.Mode())
		}
	}
	if ents, _ := filepath.Glob(filepath.Join(root, "ingest", batchPrefix+"*")); len(ents) != 0 {
		t.Fatalf("batch folder left: %v", ents)
	}
}

func TestBatchRefusesBadContent(t *testing.T) {
	ctx := context.Background()
	s, _ := Open(t.TempDir())
	batch, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Abort()
	if err := batch.Add(ctx, bytes.NewReader([]byte("x")), digest.FromBytes([]byte("y")), 1); !errors.Is(err, errdefs.ErrDigestMismatch) {
		t.Fatalf("wrong bytes: %v", err)
	}
	if err := batch.Add(ctx, bytes.NewReader([]byte("xy")), digest.FromBytes([]byte("xy")), 3); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("wrong size: %v", err)
	}
	if err := batch.AddBytes(ctx, []byte("x"), digest.FromBytes([]byte("y"))); !errors.Is(err, errdefs.ErrDigestMismatch) {
		t.Fatalf("wrong bytes in memory: %v", err)
	}
	if err := batch.AddBytes(ctx, []byte("x"), "sha256:nothex"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bad digest: %v", err)
	}
	if err := batch.AddVerifiedBytes(ctx, []byte("x"), "sha256:nothex"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bad digest of verified bytes: %v", err)
	}
	batch.Abort()
	var n int
	s.Walk(ctx, func(Info) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d blobs after an aborted batch", n)
	}
}
