package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/layers"
)

// After a power loss a snapshot record can outlive its files' data. The
// next open in another boot unpacks the snapshots that were not synced
// again from their blobs (or removes those no image needs), check reports
// it as repaired and nothing as a problem, and a later open finds nothing
// more to do.
func TestPowerLossRebuildsUnsyncedSnapshots(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	root := t.TempDir()
	boot := func(id string) Options {
		return Options{BootID: func() (string, error) { return id, nil }}
	}
	opts := boot("boot-a")
	opts.Create = true
	s, err := Open(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	img := gcImage(t, "", "a", "b")
	putImage(t, s, "example.com/kept:1", img.Manifest, img.Blobs, true)
	orphan := gcImage(t, "", "z")
	putImage(t, s, "example.com/orphan:1", orphan.Manifest, orphan.Blobs, true)
	if err := s.RemoveImage(ctx, "example.com/orphan:1"); err != nil {
		t.Fatal(err)
	}
	sn, err := s.Snapshotter()
	if err != nil {
		t.Fatal(err)
	}
	keys := chainKeys(img)
	var files []string
	for i, k := range keys {
		r, err := sn.Stat(ctx, k)
		if err != nil || r.Labels[layers.LabelUnsynced] != "boot-a" {
			t.Fatalf("snapshot %s: %+v, %v", k, r, err)
		}
		files = append(files, filepath.Join(root, "snapshots", r.ID, "fs", []string{"a", "b"}[i]))
	}
	// What a power cut can leave: a file without its data, a file missing.
	if err := os.Truncate(files[0], 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(files[1]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(root, boot("boot-b"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Check(ctx, StoreCheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems after the reboot: %+v", rep.Problems)
	}
	for _, k := range keys {
		wantFinding(t, "reboot", rep.Repaired, "snapshot", k, "unpacked again")
	}
	wantFinding(t, "reboot", rep.Repaired, "snapshot", chainKeys(orphan)[0], "removed")
	for i, p := range files {
		want := "content of " + []string{"a", "b"}[i] + "\n"
		if b, err := os.ReadFile(p); err != nil || string(b) != want {
			t.Errorf("%s after the reboot: %q, %v", p, b, err)
		}
	}
	sn, err = s.Snapshotter()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Stat(ctx, chainKeys(orphan)[0]); err == nil {
		t.Error("the snapshot no image names is still there")
	}
	for _, k := range keys {
		if r, err := sn.Stat(ctx, k); err != nil || r.Labels[layers.LabelUnsynced] != "" {
			t.Errorf("snapshot %s after the repair: %+v, %v", k, r, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(root, boot("boot-b"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rep, err = s.Check(ctx, StoreCheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || len(rep.Repaired) != 0 {
		t.Errorf("second open in the same boot: %+v", rep)
	}
}
