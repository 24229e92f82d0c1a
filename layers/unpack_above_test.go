package layers

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

// extractingDir returns the fs directory of the one snapshot being
// extracted.
func extractingDir(t *testing.T, s *Snapshotter) string {
	t.Helper()
	recs, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, r := range recs {
		if r.Kind == index.SnapshotActive && r.Labels[LabelExtracting] != "" {
			dirs = append(dirs, s.fsDir(r.ID))
		}
	}
	if len(dirs) != 1 {
		t.Fatalf("snapshots being extracted: %v, want one (records %+v)", dirs, recs)
	}
	return dirs[0]
}

// A layer unpacked above a parent still being unpacked writes its own
// files at once, waits for the parent only when it must look below (here a
// hardlink to a lower file), and commits on the committed parent.
func TestUnpackAboveWaitsForTheParentOnlyWhenItLooksBelow(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s, _ := newSnapshotter(t)
	ls := gzLayers(t, [][]tent{
		{tDir("bin", 0o755), tFile("bin/sh", 0o755, "shell")},
		{tDir("own", 0o700), tFile("own/a", 0o640, "mine"), tHard("own/sh", "bin/sh"), tFile("usr/lib/x", 0o644, "x")},
	})
	chain := ChainIDs([]digest.Digest{ls[0].diffID, ls[1].diffID})
	asked, release := make(chan struct{}), make(chan struct{})
	ready := func(ctx context.Context) error {
		close(asked)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	type result struct {
		rec index.Snapshot
		err error
	}
	done := make(chan result, 1)
	go func() {
		rec, err := s.UnpackAbove(ctx, chain[1].String(), chain[0].String(), ready, bytes.NewReader(ls[1].blob), ocispec.MediaTypeImageLayerGzip, ls[1].diffID)
		done <- result{rec, err}
	}()
	<-asked
	// Asked at the hardlink: what came before is written, nothing after.
	dir := extractingDir(t, s)
	if b, err := os.ReadFile(filepath.Join(dir, "own/a")); err != nil || string(b) != "mine" {
		t.Fatalf("own/a before the parent is ready: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "usr")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("usr exists before the parent is ready: %v", err)
	}
	if _, err := s.Stat(ctx, chain[1].String()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("layer committed before its parent: %v", err)
	}
	if _, err := s.Unpack(ctx, chain[0].String(), "", bytes.NewReader(ls[0].blob), ocispec.MediaTypeImageLayerGzip, ls[0].diffID); err != nil {
		t.Fatal(err)
	}
	close(release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.rec.Parent != chain[0].String() || r.rec.Kind != index.SnapshotCommitted {
		t.Fatalf("record %+v, want committed on %s", r.rec, chain[0])
	}
	top := s.fsDir(r.rec.ID)
	if b, err := os.ReadFile(filepath.Join(top, "own/sh")); err != nil || string(b) != "shell" {
		t.Fatalf("hardlink copied up from below: %q, %v", b, err)
	}
	var a, b os.FileInfo
	var err error
	if a, err = os.Lstat(filepath.Join(top, "own/sh")); err == nil {
		b, err = os.Lstat(filepath.Join(top, "bin/sh"))
	}
	if err != nil || !os.SameFile(a, b) {
		t.Fatalf("own/sh and its copied-up target are not one inode: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(top, "usr/lib/x")); err != nil || string(b) != "x" {
		t.Fatalf("usr/lib/x: %q, %v", b, err)
	}
}

// A layer that never looks below still waits for its parent before it
// commits; when the parent fails, the layer fails with that reason and
// leaves no snapshot behind.
func TestUnpackAboveFailsWhenTheParentFails(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s, root := newSnapshotter(t)
	ls := gzLayers(t, [][]tent{{tDir("etc", 0o755), tFile("etc/a", 0o644, "a")}})
	parentErr := errors.New("layer below: digest mismatch")
	asked := 0
	ready := func(context.Context) error { asked++; return parentErr }
	_, err := s.UnpackAbove(ctx, "sha256:top", "sha256:below", ready, bytes.NewReader(ls[0].blob), ocispec.MediaTypeImageLayerGzip, ls[0].diffID)
	if !errors.Is(err, parentErr) || !strings.Contains(err.Error(), "wait for the layer below") {
		t.Fatalf("err = %v, want the parent's error", err)
	}
	if asked != 1 {
		t.Fatalf("parentReady called %d times, want once (before the commit)", asked)
	}
	if recs, _ := s.List(ctx); len(recs) != 0 {
		t.Fatalf("records left: %+v", recs)
	}
	if d := snapshotDirs(t, root); len(d) != 0 {
		t.Fatalf("directories left: %v", d)
	}
}
