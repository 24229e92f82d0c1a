package index

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/casfs/casfs/internal/diskspace"
	"github.com/casfs/casfs/internal/testenv"
)

// On a full filesystem metadata writes fail with ENOSPC instead of badger
// taking SIGBUS, reads go on, opening and closing work (with the spare file
// freed for badger, else read-only), and once space is freed writes work
// again in the same handle.
func TestFullFilesystem(t *testing.T) {
	root := testenv.SmallFS(t, diskspace.MetaReserve+48<<20)
	dir := filepath.Join(root, "meta")
	spare := filepath.Join(dir, spareFile)
	put := func(db *DB, name string) error {
		return db.Images().Put(ctx, name, Image{Name: name})
	}
	wantNoSpace := func(err error) {
		t.Helper()
		if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "ENOSPC") {
			t.Fatalf("write on a full filesystem: %v", err)
		}
	}
	wantSpare := func(want bool) {
		t.Helper()
		if _, err := os.Stat(spare); (err == nil) != want {
			t.Fatalf("spare file present = %v, want %v", err == nil, want)
		}
	}
	wantRead := func(db *DB, names ...string) {
		t.Helper()
		for _, name := range names {
			if got, err := db.Images().Get(ctx, name); err != nil || got.Name != name {
				t.Fatalf("read %s: %+v, %v", name, got, err)
			}
		}
	}

	// Closed with space, opened full: the spare file is freed for badger.
	db := openTest(t, dir)
	if err := put(db, "lab/before:1"); err != nil {
		t.Fatal(err)
	}
	// The memtable log badger writes through a mapping has its blocks.
	logs, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	if len(logs) == 0 {
		t.Fatal("no memtable log")
	}
	for _, p := range logs {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Sys().(*syscall.Stat_t).Blocks * 512; got < fi.Size() {
			t.Fatalf("%s: %d of %d bytes allocated", p, got, fi.Size())
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wantSpare(true)
	filler := testenv.FillFS(t, root, "filler", 0)
	db = openTest(t, dir)
	wantSpare(false)
	wantRead(db, "lab/before:1")
	wantNoSpace(put(db, "lab/full:1"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Opened full without a spare file: read-only; writable again, in the
	// same handle, once space is freed.
	db = openTest(t, dir)
	if !db.readOnly {
		t.Fatal("opened read-write on a full filesystem without a spare file")
	}
	wantRead(db, "lab/before:1")
	wantNoSpace(put(db, "lab/full:2"))
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := put(db, "lab/after:1"); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	wantSpare(true)

	// Filled while open with unflushed writes: writes fail, reads work, and
	// closing frees the spare file to flush.
	filler = testenv.FillFS(t, root, "filler", 0)
	wantNoSpace(put(db, "lab/full:3"))
	wantRead(db, "lab/before:1", "lab/after:1")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wantSpare(false)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir)
	wantRead(db, "lab/before:1", "lab/after:1")
	if err := put(db, "lab/again:1"); err != nil {
		t.Fatal(err)
	}
	wantSpare(true)
}
