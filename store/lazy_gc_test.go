package store

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/index"
)

// TestCollectRemovesStaleLazyCaches: gc removes the chunk caches of layers
// with no record, of layers whose record it collects and of completed
// layers, keeps the cache of a layer still lazy, and a dry run reports the
// same caches without removing any; check notes the caches of layers with
// no record and of completed ones.
func TestCollectRemovesStaleLazyCaches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t)
	db, err := s.Index()
	if err != nil {
		t.Fatal(err)
	}
	record := func(d digest.Digest, root bool) {
		t.Helper()
		b := index.Blob{Digest: d, Size: 10}
		if root {
			b.Labels = map[string]string{index.LabelGCRoot: "x"}
		}
		if err := db.Blobs().Put(ctx, d.String(), b); err != nil {
			t.Fatal(err)
		}
	}
	cache := func(d digest.Digest) {
		t.Helper()
		dir := s.lazyCacheDir(d)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "data"), make([]byte, 10), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ranges"), []byte("0 5\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lazyKept := digest.FromString("lazy layer an image needs")
	record(lazyKept, true)
	cache(lazyKept)
	unreferenced := digest.FromString("lazy layer of a removed image")
	record(unreferenced, false)
	cache(unreferenced)
	orphan := digest.FromString("no record at all")
	cache(orphan)
	complete := putBlob(t, s, []byte("a completed layer"))
	if _, err := s.LabelContent(ctx, complete, map[string]string{index.LabelGCRoot: "x"}, nil); err != nil {
		t.Fatal(err)
	}
	cache(complete)

	want := []digest.Digest{complete, orphan, unreferenced}
	slices.Sort(want)
	got := func(rep GCReport) []digest.Digest {
		var out []digest.Digest
		for _, c := range rep.LazyCaches {
			if c.Size != 5 {
				t.Errorf("cache of %s reported with %d bytes, want 5", c.Digest, c.Size)
			}
			out = append(out, c.Digest)
		}
		slices.Sort(out)
		return out
	}
	chk, err := s.Check(ctx, StoreCheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var noted []digest.Digest
	for _, n := range chk.Notes {
		if n.Kind == "lazy cache" {
			noted = append(noted, digest.Digest(n.Name))
		}
	}
	slices.Sort(noted)
	// Check knows no gc roots: the cache of a recorded layer it leaves to gc.
	wantNoted := []digest.Digest{complete, orphan}
	slices.Sort(wantNoted)
	if !slices.Equal(noted, wantNoted) {
		t.Fatalf("check notes stale caches %v, want %v", noted, wantNoted)
	}
	dry, err := s.Collect(ctx, CollectOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if g := got(dry); !slices.Equal(g, want) {
		t.Fatalf("dry run reports caches %v, want %v", g, want)
	}
	for _, d := range want {
		if _, err := os.Stat(s.lazyCacheDir(d)); err != nil {
			t.Fatalf("dry run removed the cache of %s: %v", d, err)
		}
	}
	rep, err := s.Collect(ctx, CollectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if g := got(rep); !slices.Equal(g, want) {
		t.Fatalf("gc removed caches %v, want %v", g, want)
	}
	for _, d := range want {
		if _, err := os.Stat(s.lazyCacheDir(d)); !os.IsNotExist(err) {
			t.Errorf("cache of %s still there: %v", d, err)
		}
	}
	if _, err := os.Stat(s.lazyCacheDir(lazyKept)); err != nil {
		t.Fatalf("gc removed the cache of a layer still lazy: %v", err)
	}
}

// TestCollectKeepsCachesOfLayersBeingOpened: a lazy pull writes a layer's
// chunk cache before the layer's record, so gc leaves the cache of a layer
// a pull is opening, and takes it once the pull is done with it and no
// record came.
func TestCollectKeepsCachesOfLayersBeingOpened(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t)
	d := digest.FromString("a layer whose TOC a pull is reading")
	dir := s.lazyCacheDir(d)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ranges"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s.opening.add(d)
	s.opening.add(d) // a second pull of the same layer
	s.opening.done(d)
	rep, err := s.Collect(ctx, CollectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.LazyCaches) != 0 {
		t.Fatalf("gc removed caches %v while a pull was opening the layer", rep.LazyCaches)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the cache of a layer being opened is gone: %v", err)
	}
	s.opening.done(d)
	if rep, err = s.Collect(ctx, CollectOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(rep.LazyCaches) != 1 || rep.LazyCaches[0].Digest != d {
		t.Fatalf("gc removed caches %v once the pulls were done, want the one of %s", rep.LazyCaches, d)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the cache of a layer no pull opens and nothing records is still there: %v", err)
	}
}
