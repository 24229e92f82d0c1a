package layers

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

// A snapshot carries the boot that wrote it until Sync; a snapshotter in
// another boot finds it stale, parents first, and Rebuild makes its files
// whole again from the blob.
func TestSnapshotterUnsyncedAcrossBoots(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	root := t.TempDir()
	s, db := openStore(t, root)
	defer db.Close()
	defer s.Close()
	s.BootID = func() (string, error) { return "boot-a", nil }
	stack := gzLayers(t, [][]tent{
		{tDir("etc", 0o755), tFile("etc/a", 0o644, "alpha")},
		{tFile("etc/b", 0o600, "beta"), tWh("etc/a")},
	})
	chain := ChainIDs([]digest.Digest{stack[0].diffID, stack[1].diffID})
	var recs []index.Snapshot
	for i, l := range stack {
		parent := ""
		if i > 0 {
			parent = chain[i-1].String()
		}
		rec, err := s.Unpack(ctx, chain[i].String(), parent, bytes.NewReader(l.blob), ocispec.MediaTypeImageLayerGzip, l.diffID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Labels[LabelUnsynced] != "boot-a" {
			t.Fatalf("layer %d: labels %v", i, rec.Labels)
		}
		recs = append(recs, rec)
	}
	if stale, err := s.Stale(ctx); err != nil || len(stale) != 0 {
		t.Fatalf("same boot: stale %v, %v", stale, err)
	}

	// A power cut: the first layer's file lost its data, the second's is gone.
	fileA := filepath.Join(root, "snapshots", recs[0].ID, "fs", "etc", "a")
	fileB := filepath.Join(root, "snapshots", recs[1].ID, "fs", "etc", "b")
	if err := os.Truncate(fileA, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(fileB); err != nil {
		t.Fatal(err)
	}
	s2, err := NewSnapshotter(root, db)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	s2.BootID = func() (string, error) { return "boot-b", nil }
	stale, err := s2.Stale(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) != 2 || stale[0].Key != chain[0].String() || stale[1].Key != chain[1].String() {
		t.Fatalf("stale: %+v", stale)
	}
	for i, r := range stale {
		if err := s2.Rebuild(ctx, r.Key, bytes.NewReader(stack[i].blob), ocispec.MediaTypeImageLayerGzip); err != nil {
			t.Fatal(err)
		}
	}
	for p, want := range map[string]string{fileA: "alpha", fileB: "beta"} {
		if b, err := os.ReadFile(p); err != nil || string(b) != want {
			t.Errorf("%s after rebuild: %q, %v", p, b, err)
		}
	}
	if fi, err := os.Stat(fileB); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode of %s after rebuild: %v, %v", fileB, fi, err)
	}
	// The lower layer's whiteout is still an overlay whiteout.
	wh := filepath.Join(root, "snapshots", recs[1].ID, "fs", "etc", "a")
	if fi, err := os.Lstat(wh); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("whiteout after rebuild: %v, %v", fi, err)
	}
	if err := s2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{chain[0].String(), chain[1].String()} {
		r, err := s2.Stat(ctx, k)
		if err != nil || r.Labels[LabelUnsynced] != "" || r.Labels[LabelDiffID] == "" {
			t.Errorf("%s after sync: %+v, %v", k, r, err)
		}
	}
	if stale, err := s2.Stale(ctx); err != nil || len(stale) != 0 {
		t.Fatalf("after sync: stale %v, %v", stale, err)
	}
}

// A rebuild that does not reproduce the recorded diff ID fails and says so.
func TestSnapshotterRebuildChecksDiffID(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s, _ := newSnapshotter(t)
	defer s.Close()
	stack := gzLayers(t, [][]tent{{tFile("x", 0o644, "x")}, {tFile("y", 0o644, "y")}})
	key := stack[0].diffID.String()
	if _, err := s.Unpack(ctx, key, "", bytes.NewReader(stack[0].blob), ocispec.MediaTypeImageLayerGzip, stack[0].diffID); err != nil {
		t.Fatal(err)
	}
	err := s.Rebuild(ctx, key, bytes.NewReader(stack[1].blob), ocispec.MediaTypeImageLayerGzip)
	if !errors.Is(err, errdefs.ErrDigestMismatch) || !strings.Contains(err.Error(), stack[0].diffID.String()) {
		t.Fatalf("rebuild from the wrong blob: %v", err)
	}
}

// An unpack schedules a sync of what it wrote; once it has run, the record
// no longer says unsynced. After Close nothing is scheduled.
func TestSnapshotterSyncSoon(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s, _ := newSnapshotter(t)
	s.SyncDelay = time.Millisecond
	l := gzLayers(t, [][]tent{{tFile("x", 0o644, "x")}})[0]
	key := l.diffID.String()
	if _, err := s.Unpack(ctx, key, "", bytes.NewReader(l.blob), ocispec.MediaTypeImageLayerGzip, l.diffID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if r.Labels[LabelUnsynced] == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still unsynced after 30s: %v", r.Labels)
		}
		time.Sleep(5 * time.Millisecond) // polling the condition, bounded above
	}
	s.Close()
	s.SyncSoon()
	s.syncMu.Lock()
	scheduled := s.syncTimer != nil
	s.syncMu.Unlock()
	if scheduled {
		t.Fatal("a sync was scheduled after Close")
	}
}
