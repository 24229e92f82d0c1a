package index

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casfs/casfs/errdefs"
	badger "github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// stamp is a time with nanoseconds and a zone, which JSON must keep.
var stamp = time.Date(2025, 11, 27, 3, 4, 5, 123456789, time.FixedZone("CET", 3600))

// sameTime checks a round-tripped time and copies want's value into got so
// the rest can be compared with DeepEqual (the zone's name is not kept).
func sameTime(t *testing.T, what string, got *time.Time, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s: got %v, want %v", what, *got, want)
	}
	_, goff := got.Zone()
	_, woff := want.Zone()
	if goff != woff {
		t.Errorf("%s: zone offset %d, want %d", what, goff, woff)
	}
	*got = want
}

func TestRoundTrips(t *testing.T) {
	db := newDB(t)
	d := digest.FromString("hello")
	labels := map[string]string{"containerd.io/gc.ref.content.l.0": d.String(), "empty": ""}

	blob := Blob{Digest: d, Size: 5, MediaType: ocispec.MediaTypeImageLayerGzip,
		CreatedAt: stamp, UpdatedAt: stamp.Add(time.Hour), Labels: labels}
	if err := db.Blobs().Put(ctx, d.String(), blob); err != nil {
		t.Fatal(err)
	}
	gb, err := db.Blobs().Get(ctx, d.String())
	if err != nil {
		t.Fatal(err)
	}
	sameTime(t, "blob created", &gb.CreatedAt, blob.CreatedAt)
	sameTime(t, "blob updated", &gb.UpdatedAt, blob.UpdatedAt)
	if !reflect.DeepEqual(gb, blob) {
		t.Errorf("blob: got %+v, want %+v", gb, blob)
	}

	img := Image{Name: "docker.io/library/nginx:alpine", Labels: labels, CreatedAt: stamp, UpdatedAt: stamp.UTC(),
		Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: d, Size: 1234,
			Annotations: map[string]string{"a": "b"}, Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}}
	if err := db.Images().Put(ctx, img.Name, img); err != nil {
		t.Fatal(err)
	}
	gi, err := db.Images().Get(ctx, img.Name)
	if err != nil {
		t.Fatal(err)
	}
	sameTime(t, "image created", &gi.CreatedAt, img.CreatedAt)
	sameTime(t, "image updated", &gi.UpdatedAt, img.UpdatedAt)
	if !reflect.DeepEqual(gi, img) {
		t.Errorf("image: got %+v, want %+v", gi, img)
	}

	snap := Snapshot{Key: "sha256:chain", Parent: "sha256:parent", ID: "17", Kind: SnapshotCommitted,
		Size: 4096, Inodes: 12, Labels: labels, CreatedAt: stamp, UpdatedAt: stamp}
	if err := db.Snapshots().Put(ctx, snap.Key, snap); err != nil {
		t.Fatal(err)
	}
	gs, err := db.Snapshots().Get(ctx, snap.Key)
	if err != nil {
		t.Fatal(err)
	}
	sameTime(t, "snapshot created", &gs.CreatedAt, snap.CreatedAt)
	sameTime(t, "snapshot updated", &gs.UpdatedAt, snap.UpdatedAt)
	if !reflect.DeepEqual(gs, snap) {
		t.Errorf("snapshot: got %+v, want %+v", gs, snap)
	}

	lease := Lease{ID: "pull-1", CreatedAt: stamp, Expires: stamp.Add(24 * time.Hour), Labels: labels,
		Blobs: []digest.Digest{d, digest.FromString("x")}, Snapshots: []string{"a", "b"}}
	if err := db.Leases().Put(ctx, lease.ID, lease); err != nil {
		t.Fatal(err)
	}
	gl, err := db.Leases().Get(ctx, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameTime(t, "lease created", &gl.CreatedAt, lease.CreatedAt)
	sameTime(t, "lease expires", &gl.Expires, lease.Expires)
	if !reflect.DeepEqual(gl, lease) {
		t.Errorf("lease: got %+v, want %+v", gl, lease)
	}
}

func TestPutReplaces(t *testing.T) {
	db := newDB(t)
	blobs := db.Blobs()
	if err := blobs.Put(ctx, "k", Blob{Size: 1, Labels: map[string]string{"old": "1"}}); err != nil {
		t.Fatal(err)
	}
	if err := blobs.Put(ctx, "k", Blob{Size: 2}); err != nil {
		t.Fatal(err)
	}
	got, err := blobs.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != 2 || got.Labels != nil {
		t.Fatalf("after replace got %+v, want size 2 and no labels", got)
	}
}

func TestTablesAreSeparate(t *testing.T) {
	db := newDB(t)
	if err := db.Blobs().Put(ctx, "same", Blob{Size: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Images().Get(ctx, "same"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("image with a blob's key: %v, want ErrNotFound", err)
	}
	// A key that looks like another table's prefix stays in its own table.
	if err := db.Images().Put(ctx, "../blob/x", Image{Name: "odd"}); err != nil {
		t.Fatal(err)
	}
	n, err := db.Blobs().Count(ctx)
	if err != nil || n != 1 {
		t.Fatalf("blob count %d, %v; want 1", n, err)
	}
}

func TestCreateExists(t *testing.T) {
	db := newDB(t)
	leases := db.Leases()
	if err := leases.Create(ctx, "l1", Lease{ID: "first"}); err != nil {
		t.Fatal(err)
	}
	err := leases.Create(ctx, "l1", Lease{ID: "second"})
	if !errors.Is(err, errdefs.ErrExists) || !strings.Contains(err.Error(), "lease l1") {
		t.Fatalf("second create: %v, want ErrExists naming lease l1", err)
	}
	got, err := leases.Get(ctx, "l1")
	if err != nil || got.ID != "first" {
		t.Fatalf("after refused create got %+v, %v; want the first record", got, err)
	}
}

func TestNotFoundNamesKey(t *testing.T) {
	db := newDB(t)
	_, err := db.Images().Get(ctx, "lab/missing:1")
	if !errors.Is(err, errdefs.ErrNotFound) || err.Error() != "image lab/missing:1: not found" {
		t.Fatalf("get missing: %v", err)
	}
	err = db.Blobs().Delete(ctx, "sha256:nope")
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "blob sha256:nope") {
		t.Fatalf("delete missing: %v", err)
	}
	_, err = db.Snapshots().Update(ctx, "gone", func(*Snapshot) error { t.Error("fn ran for a missing record"); return nil })
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "snapshot gone") {
		t.Fatalf("update missing: %v", err)
	}
	// Keys with control characters stay on one line in messages.
	_, err = db.Images().Get(ctx, "a\nb")
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("message spans lines: %q", err)
	}
}

func TestDelete(t *testing.T) {
	db := newDB(t)
	snaps := db.Snapshots()
	if err := snaps.Put(ctx, "s", Snapshot{ID: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := snaps.Delete(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := snaps.Get(ctx, "s"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := snaps.Delete(ctx, "s"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestEmptyKeyRejected(t *testing.T) {
	db := newDB(t)
	b := db.Blobs()
	_, getErr := b.Get(ctx, "")
	_, updErr := b.Update(ctx, "", func(*Blob) error { return nil })
	errs := map[string]error{
		"get":      getErr,
		"put":      b.Put(ctx, "", Blob{}),
		"create":   b.Create(ctx, "", Blob{}),
		"update":   updErr,
		"delete":   b.Delete(ctx, ""),
		"putmany":  b.PutMany(ctx, []Entry[Blob]{{Key: "ok"}, {Key: ""}}),
		"too long": b.Put(ctx, strings.Repeat("x", 70000), Blob{}),
	}
	for name, err := range errs {
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s with a bad key: %v, want ErrInvalidArgument", name, err)
		}
	}
	// PutMany checks every entry before writing any.
	if n, err := b.Count(ctx); err != nil || n != 0 {
		t.Fatalf("count after refused writes: %d, %v; want 0", n, err)
	}
}

func TestZeroTableFails(t *testing.T) {
	var tbl Table[Blob]
	if _, err := tbl.Get(ctx, "a"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("zero table get: %v", err)
	}
	if err := tbl.PutMany(ctx, []Entry[Blob]{{Key: "a"}}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("zero table putmany: %v", err)
	}
}

func TestUpdate(t *testing.T) {
	db := newDB(t)
	imgs := db.Images()
	if err := imgs.Put(ctx, "x", Image{Name: "x", Labels: map[string]string{"a": "1"}}); err != nil {
		t.Fatal(err)
	}
	got, err := imgs.Update(ctx, "x", func(im *Image) error {
		im.Labels["b"] = "2"
		im.UpdatedAt = stamp
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["b"] != "2" || !got.UpdatedAt.Equal(stamp) {
		t.Fatalf("update returned %+v", got)
	}
	stored, err := imgs.Get(ctx, "x")
	if err != nil || stored.Labels["a"] != "1" || stored.Labels["b"] != "2" {
		t.Fatalf("stored after update %+v, %v", stored, err)
	}

	// fn's error comes back as it is and nothing is written.
	errNo := errors.New("refused by caller")
	_, err = imgs.Update(ctx, "x", func(im *Image) error {
		im.Labels["c"] = "3"
		return errNo
	})
	if err != errNo {
		t.Fatalf("update with failing fn: %v, want the fn's error itself", err)
	}
	stored, err = imgs.Get(ctx, "x")
	if err != nil || stored.Labels["c"] != "" {
		t.Fatalf("failed update wrote: %+v, %v", stored, err)
	}
}

func TestUpdateConcurrentIncrements(t *testing.T) {
	db := newDB(t)
	blobs := db.Blobs()
	if err := blobs.Put(ctx, "counter", Blob{Labels: map[string]string{"n": "0"}}); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				_, err := blobs.Update(ctx, "counter", func(b *Blob) error {
					n, err := strconv.Atoi(b.Labels["n"])
					if err != nil {
						return err
					}
					b.Labels["n"] = strconv.Itoa(n + 1)
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := blobs.Get(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(workers * each); got.Labels["n"] != want {
		t.Fatalf("counter %s, want %s: an increment was lost", got.Labels["n"], want)
	}
}

func TestListPrefixOrderStop(t *testing.T) {
	db := newDB(t)
	imgs := db.Images()
	names := []string{"lab/b:1", "lab/a:2", "other/z:1", "lab/a:1", "lab/a:10", "la"}
	for _, n := range names {
		if err := imgs.Put(ctx, n, Image{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	// A record in another table must not show up.
	if err := db.Blobs().Put(ctx, "lab/a:0", Blob{}); err != nil {
		t.Fatal(err)
	}

	collect := func(prefix string) []string {
		var keys []string
		err := imgs.List(ctx, prefix, func(k string, v Image) error {
			if v.Name != k {
				t.Errorf("record under %q has name %q", k, v.Name)
			}
			keys = append(keys, k)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	if got, want := collect("lab/"), []string{"lab/a:1", "lab/a:10", "lab/a:2", "lab/b:1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("list lab/: %q, want %q", got, want)
	}
	if got, want := collect(""), []string{"la", "lab/a:1", "lab/a:10", "lab/a:2", "lab/b:1", "other/z:1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("list all: %q, want %q", got, want)
	}
	if got := collect("nothing/"); len(got) != 0 {
		t.Errorf("list nothing/: %q", got)
	}

	errStop := errors.New("stop here")
	var seen []string
	err := imgs.List(ctx, "", func(k string, _ Image) error {
		seen = append(seen, k)
		if len(seen) == 2 {
			return errStop
		}
		return nil
	})
	if err != errStop || len(seen) != 2 {
		t.Fatalf("early stop: err %v after %q, want errStop after 2", err, seen)
	}
}

// A List callback may write to the database it is listing (delete what it
// is shown), without deadlock and without disturbing the walk.
func TestListCallbackWrites(t *testing.T) {
	db := newDB(t)
	blobs := db.Blobs()
	for i := range 10 {
		if err := blobs.Put(ctx, fmt.Sprintf("k%02d", i), Blob{Size: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	err := blobs.List(ctx, "", func(k string, b Blob) error {
		seen++
		if b.Size%2 == 0 {
			return blobs.Delete(ctx, k)
		}
		return nil
	})
	if err != nil || seen != 10 {
		t.Fatalf("list saw %d, %v; want 10", seen, err)
	}
	if n, err := blobs.Count(ctx); err != nil || n != 5 {
		t.Fatalf("count %d, %v; want 5", n, err)
	}
}

func TestPutManyAndCount(t *testing.T) {
	db := newDB(t)
	blobs := db.Blobs()
	entries := make([]Entry[Blob], 5000)
	for i := range entries {
		d := digest.FromString(strconv.Itoa(i))
		entries[i] = Entry[Blob]{Key: d.String(), Value: Blob{Digest: d, Size: int64(i), CreatedAt: stamp}}
	}
	if err := blobs.PutMany(ctx, entries); err != nil {
		t.Fatal(err)
	}
	if n, err := blobs.Count(ctx); err != nil || n != len(entries) {
		t.Fatalf("count %d, %v; want %d", n, err, len(entries))
	}
	if n, err := db.Images().Count(ctx); err != nil || n != 0 {
		t.Fatalf("image count %d, %v; want 0", n, err)
	}
	got, err := blobs.Get(ctx, entries[1234].Key)
	if err != nil || got.Size != 1234 || !got.CreatedAt.Equal(stamp) {
		t.Fatalf("get after PutMany: %+v, %v", got, err)
	}
	// Listing all of them sees each once, in order.
	prev, n := "", 0
	err = blobs.List(ctx, "sha256:", func(k string, b Blob) error {
		if k <= prev || b.Digest.String() != k {
			return fmt.Errorf("key %s after %s, record %s", k, prev, b.Digest)
		}
		prev = k
		n++
		return nil
	})
	if err != nil || n != len(entries) {
		t.Fatalf("listed %d, %v", n, err)
	}
}

func TestCancelledContext(t *testing.T) {
	db := newDB(t)
	c, cancel := context.WithCancel(ctx)
	cancel()
	if err := db.Blobs().Put(c, "a", Blob{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("put with cancelled ctx: %v", err)
	}
	if _, err := db.Blobs().Get(c, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("get with cancelled ctx: %v", err)
	}
}

// Listings longer than one decode batch go through the decoding workers:
// order, early stop part-way and a bad record must behave the same.
func TestListLarge(t *testing.T) {
	db := newDB(t)
	blobs := db.Blobs()
	const n = 5*listBatch + 17
	entries := make([]Entry[Blob], n)
	for i := range entries {
		entries[i] = Entry[Blob]{Key: fmt.Sprintf("k%05d", i), Value: Blob{Size: int64(i)}}
	}
	if err := blobs.PutMany(ctx, entries); err != nil {
		t.Fatal(err)
	}
	i := 0
	err := blobs.List(ctx, "k", func(k string, b Blob) error {
		if k != entries[i].Key || b.Size != int64(i) {
			return fmt.Errorf("record %d: got %s size %d", i, k, b.Size)
		}
		i++
		return nil
	})
	if err != nil || i != n {
		t.Fatalf("listed %d of %d: %v", i, n, err)
	}

	errStop := errors.New("stop")
	seen := 0
	err = blobs.List(ctx, "", func(string, Blob) error {
		if seen++; seen == 3*listBatch+5 {
			return errStop
		}
		return nil
	})
	if err != errStop || seen != 3*listBatch+5 {
		t.Fatalf("early stop: %v after %d", err, seen)
	}

	// A record that is not valid JSON stops the walk where it sits, with
	// an error naming it; the records before it are delivered.
	bad := entries[2*listBatch+3].Key
	if err := db.bdb.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte("blob/"+bad), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	seen = 0
	err = blobs.List(ctx, "", func(string, Blob) error { seen++; return nil })
	if err == nil || !strings.Contains(err.Error(), "decode blob "+bad) || seen != 2*listBatch+3 {
		t.Fatalf("list over a bad record: %v after %d records", err, seen)
	}
	if _, err := blobs.Get(ctx, bad); err == nil || !strings.Contains(err.Error(), "decode blob "+bad) {
		t.Fatalf("get of a bad record: %v", err)
	}
}
