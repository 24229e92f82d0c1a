package index

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/casfs/casfs/errdefs"
	"github.com/opencontainers/go-digest"
)

func TestTxCommitsAcrossTables(t *testing.T) {
	db := newDB(t)
	d := digest.FromString("layer")
	if err := db.Leases().Put(ctx, "l", Lease{ID: "l", Blobs: []digest.Digest{d}}); err != nil {
		t.Fatal(err)
	}
	err := db.Update(ctx, func(tx *Tx) error {
		blobs, leases := TxTable(tx, db.Blobs()), TxTable(tx, db.Leases())
		if err := blobs.Create(d.String(), Blob{Digest: d, Size: 5}); err != nil {
			return err
		}
		// Reads inside the transaction see its own writes.
		if b, err := blobs.Get(d.String()); err != nil || b.Size != 5 {
			t.Errorf("read own write: %+v, %v", b, err)
		}
		if err := TxTable(tx, db.Images()).Put("x", Image{Name: "x"}); err != nil {
			return err
		}
		return leases.Delete("l")
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Blobs().Get(ctx, d.String()); err != nil {
		t.Errorf("blob after commit: %v", err)
	}
	if _, err := db.Images().Get(ctx, "x"); err != nil {
		t.Errorf("image after commit: %v", err)
	}
	if _, err := db.Leases().Get(ctx, "l"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("lease after commit: %v, want deleted", err)
	}
}

func TestTxErrorRollsBackEverything(t *testing.T) {
	db := newDB(t)
	if err := db.Images().Put(ctx, "keep", Image{Name: "keep"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Snapshots().Put(ctx, "s", Snapshot{ID: "1"}); err != nil {
		t.Fatal(err)
	}
	errAbort := errors.New("file removal failed")
	err := db.Update(ctx, func(tx *Tx) error {
		if err := TxTable(tx, db.Images()).Delete("keep"); err != nil {
			return err
		}
		if err := TxTable(tx, db.Blobs()).Put("new", Blob{Size: 1}); err != nil {
			return err
		}
		if err := TxTable(tx, db.Snapshots()).Put("s", Snapshot{ID: "2"}); err != nil {
			return err
		}
		return errAbort
	})
	if err != errAbort {
		t.Fatalf("update: %v, want fn's error itself", err)
	}
	if _, err := db.Images().Get(ctx, "keep"); err != nil {
		t.Errorf("deleted image came back? %v", err)
	}
	if _, err := db.Blobs().Get(ctx, "new"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("blob written by a failed tx: %v", err)
	}
	if s, err := db.Snapshots().Get(ctx, "s"); err != nil || s.ID != "1" {
		t.Errorf("snapshot after failed tx: %+v, %v; want ID 1", s, err)
	}
}

// Garbage collection's shape: walk one table, delete from it and another
// in the same transaction.
func TestTxListAndDelete(t *testing.T) {
	db := newDB(t)
	for _, k := range []string{"a", "b", "c", "d"} {
		mark := "keep"
		if k == "b" || k == "d" {
			mark = "drop"
		}
		if err := db.Blobs().Put(ctx, k, Blob{Labels: map[string]string{"gc": mark}}); err != nil {
			t.Fatal(err)
		}
		if err := db.Leases().Put(ctx, k, Lease{ID: k}); err != nil {
			t.Fatal(err)
		}
	}
	err := db.Update(ctx, func(tx *Tx) error {
		blobs, leases := TxTable(tx, db.Blobs()), TxTable(tx, db.Leases())
		return blobs.List("", func(k string, b Blob) error {
			if b.Labels["gc"] != "drop" {
				return nil
			}
			if err := blobs.Delete(k); err != nil {
				return err
			}
			return leases.Delete(k)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		gone bool
	}{{"a", false}, {"b", true}, {"c", false}, {"d", true}} {
		_, berr := db.Blobs().Get(ctx, tc.key)
		_, lerr := db.Leases().Get(ctx, tc.key)
		for what, err := range map[string]error{"blob": berr, "lease": lerr} {
			if gone := errors.Is(err, errdefs.ErrNotFound); gone != tc.gone {
				t.Errorf("%s %s: err %v, want gone=%v", what, tc.key, err, tc.gone)
			}
		}
	}
	err = db.View(ctx, func(tx *Tx) error {
		n, err := TxTable(tx, db.Leases()).Count()
		if n != 2 {
			t.Errorf("lease count in view: %d", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTxMisuse(t *testing.T) {
	db := newDB(t)
	other := newDB(t)

	err := db.View(ctx, func(tx *Tx) error {
		return TxTable(tx, db.Blobs()).Put("a", Blob{})
	})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("write in a view: %v", err)
	}

	err = db.Update(ctx, func(tx *Tx) error {
		return TxTable(tx, other.Blobs()).Put("a", Blob{})
	})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("table of another db: %v", err)
	}

	var kept TxView[Blob]
	if err := db.Update(ctx, func(tx *Tx) error { kept = TxTable(tx, db.Blobs()); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := kept.Get("a"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("view used after its transaction: %v", err)
	}
	if err := kept.List("", func(string, Blob) error { return nil }); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("list after its transaction: %v", err)
	}
	var zero TxView[Blob]
	if err := zero.Put("a", Blob{}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("zero view: %v", err)
	}
}

// The garbage collector's walk over many records: a transaction lists a
// table through the decoding workers while deleting from it.
func TestTxListLargeWithDeletes(t *testing.T) {
	db := newDB(t)
	const n = 3*listBatch + 1
	entries := make([]Entry[Blob], n)
	for i := range entries {
		entries[i] = Entry[Blob]{Key: fmt.Sprintf("k%05d", i), Value: Blob{Size: int64(i)}}
	}
	if err := db.Blobs().PutMany(ctx, entries); err != nil {
		t.Fatal(err)
	}
	seen := 0
	err := db.Update(ctx, func(tx *Tx) error {
		blobs := TxTable(tx, db.Blobs())
		return blobs.List("", func(k string, b Blob) error {
			seen++
			if b.Size%3 == 0 {
				return blobs.Delete(k)
			}
			return nil
		})
	})
	if err != nil || seen != n {
		t.Fatalf("walk saw %d of %d: %v", seen, n, err)
	}
	if got, err := db.Blobs().Count(ctx); err != nil || got != n-(n+2)/3 {
		t.Fatalf("count %d, %v; want %d", got, err, n-(n+2)/3)
	}
}
