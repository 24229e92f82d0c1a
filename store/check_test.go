package store

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/layers"
)

func ingestBytes(t *testing.T, s *Local, b []byte) digest.Digest {
	t.Helper()
	info, err := s.Ingest(context.Background(), "test-"+digest.FromBytes(b).Encoded(), bytes.NewReader(b), IngestOptions{Expected: digest.FromBytes(b), Size: int64(len(b))})
	if err != nil {
		t.Fatal(err)
	}
	return info.Digest
}

// storeImage records an image of one manifest, one config and the given layers.
func storeImage(t *testing.T, s *Local, name string, layerDigests ...digest.Digest) digest.Digest {
	t.Helper()
	ctx := context.Background()
	cfg := ingestBytes(t, s, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`+name))
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfg, Size: int64(len(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}` + name))}}
	m.SchemaVersion = 2
	for _, l := range layerDigests {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: l, Size: 1})
	}
	mb, _ := json.Marshal(m)
	md := ingestBytes(t, s, mb)
	db, _ := s.Index()
	now := time.Now().UTC()
	if err := db.Images().Put(ctx, name, index.Image{Name: name, Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: md, Size: int64(len(mb))}, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	return md
}

func corruptFile(t *testing.T, s *Local, d digest.Digest) {
	t.Helper()
	p, _ := s.Blobs().BlobPath(d)
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("not what it was"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// findings indexes a report's lines by "kind name".
func findings(fs []CheckFinding) map[string]string {
	out := map[string]string{}
	for _, f := range fs {
		out[f.Kind+" "+f.Name] = f.Detail
	}
	return out
}

func wantFinding(t *testing.T, what string, fs []CheckFinding, kind, name, substr string) {
	t.Helper()
	got, ok := findings(fs)[kind+" "+name]
	if !ok {
		t.Errorf("%s: no finding for %s %s; have %v", what, kind, name, fs)
		return
	}
	if !strings.Contains(got, substr) {
		t.Errorf("%s: %s %s: %q does not mention %q", what, kind, name, got, substr)
	}
}

func TestCheckCleanStore(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	l := ingestBytes(t, s, []byte("layer one"))
	storeImage(t, s, "example.com/a:1", l)
	rep, err := s.Check(ctx, StoreCheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || len(rep.Repaired) != 0 {
		t.Fatalf("clean store: %+v", rep)
	}
	if rep.Checked.Blobs != 3 || rep.Checked.Files != 3 || rep.Checked.Images != 1 {
		t.Fatalf("counts: %+v", rep.Checked)
	}
}

func TestCheckFindsAndRepairs(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	db, _ := s.Index()
	sn, err := s.Snapshotter()
	if err != nil {
		t.Fatal(err)
	}
	old := processStart.Add(-2 * time.Hour)

	neededCorrupt := ingestBytes(t, s, []byte("needed layer"))
	ghost := digest.FromString("needed but nowhere")
	storeImage(t, s, "example.com/app:1", neededCorrupt, ghost)

	spareCorrupt := ingestBytes(t, s, []byte("nobody needs me"))
	corruptFile(t, s, neededCorrupt)
	corruptFile(t, s, spareCorrupt)

	// A record whose file is gone, with and without a registry source.
	noFile := digest.FromString("record only")
	lazy := digest.FromString("lazy layer")
	now := time.Now().UTC()
	db.Blobs().Put(ctx, noFile.String(), index.Blob{Digest: noFile, Size: 11, CreatedAt: now})
	db.Blobs().Put(ctx, lazy.String(), index.Blob{Digest: lazy, Size: 10, CreatedAt: now,
		Labels: map[string]string{labelSourcePrefix + "registry.example": "lab/x"}})

	// Files without records: one valid, one corrupt (as a crash or a disk leaves them).
	blobDir := filepath.Join(s.Root(), "blobs", "sha256")
	orphan := []byte("committed, never recorded")
	orphanD := digest.FromBytes(orphan)
	os.WriteFile(filepath.Join(blobDir, orphanD.Encoded()), orphan, 0o444)
	os.Chtimes(filepath.Join(blobDir, orphanD.Encoded()), old, old)
	badOrphanD := digest.FromString("something else")
	os.WriteFile(filepath.Join(blobDir, badOrphanD.Encoded()), []byte("garbage"), 0o444)
	os.Chtimes(filepath.Join(blobDir, badOrphanD.Encoded()), old, old)

	// Ingests: one abandoned long ago, one recent, one held right now.
	for _, ref := range []string{"stale", "recent"} {
		w, err := s.Blobs().Writer(ctx, ref, cas.WriterOpts{})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("partial " + ref))
		w.Close()
	}
	staleDir := filepath.Join(s.Root(), "ingest")
	ents, _ := os.ReadDir(staleDir)
	for _, e := range ents {
		if b, _ := os.ReadFile(filepath.Join(staleDir, e.Name(), "ref")); string(b) == "stale" {
			for _, f := range []string{"data", "updatedat"} {
				os.Chtimes(filepath.Join(staleDir, e.Name(), f), old, old)
			}
		}
	}
	held, err := s.Blobs().Writer(ctx, "held", cas.WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	// Snapshots: a record without its directory, one whose parent is
	// gone, one left extracting by an earlier process, and a directory
	// without a record.
	if _, err := sn.Prepare(ctx, "no-dir", ""); err != nil {
		t.Fatal(err)
	}
	rec, _ := sn.Stat(ctx, "no-dir")
	os.RemoveAll(filepath.Join(s.Root(), "snapshots", rec.ID))
	for _, r := range []index.Snapshot{
		{Key: "orphan-child", Parent: "gone", ID: "aaaa", Kind: index.SnapshotCommitted, CreatedAt: old},
		{Key: "extract-x", ID: "bbbb", Kind: index.SnapshotActive, Labels: map[string]string{layers.LabelExtracting: "sha256:x"}, CreatedAt: old},
	} {
		os.MkdirAll(filepath.Join(s.Root(), "snapshots", r.ID, "fs"), 0o755)
		if err := db.Snapshots().Put(ctx, r.Key, r); err != nil {
			t.Fatal(err)
		}
	}
	strayDir := filepath.Join(s.Root(), "snapshots", "cccc")
	os.MkdirAll(filepath.Join(strayDir, "fs"), 0o755)
	os.Chtimes(strayDir, old, old)

	rep, err := s.Check(ctx, StoreCheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantFinding(t, "check", rep.Problems, "blob", neededCorrupt.String(), "cannot re-fetch")
	wantFinding(t, "check", rep.Problems, "blob", spareCorrupt.String(), "does not match its digest")
	wantFinding(t, "check", rep.Problems, "blob", noFile.String(), "file is missing")
	wantFinding(t, "check", rep.Problems, "image", "example.com/app:1", ghost.String())
	wantFinding(t, "check", rep.Problems, "file", badOrphanD.String(), "does not match")
	wantFinding(t, "check", rep.Problems, "ingest", `"stale"`, "stale")
	wantFinding(t, "check", rep.Problems, "snapshot", "no-dir", "directory")
	wantFinding(t, "check", rep.Problems, "snapshot", "orphan-child", "parent gone")
	wantFinding(t, "check", rep.Problems, "snapshot", "extract-x", "extracting")
	wantFinding(t, "check", rep.Problems, "snapshot", "dir cccc", "without a record")
	wantFinding(t, "check", rep.Notes, "blob", lazy.String(), "not local (lazy)")
	wantFinding(t, "check", rep.Notes, "file", orphanD.String(), "not recorded")
	wantFinding(t, "check", rep.Notes, "ingest", `"recent"`, "resumable")
	wantFinding(t, "check", rep.Notes, "ingest", `"held"`, "in progress")
	if len(rep.Problems) != 10 || len(rep.Repaired) != 0 {
		t.Errorf("check found %d problems, repaired %d: %+v", len(rep.Problems), len(rep.Repaired), rep)
	}

	rep, err = s.Check(ctx, StoreCheckOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	// What cannot be fixed without data stays a problem.
	if len(rep.Problems) != 2 {
		t.Errorf("after repair %d problems, want the 2 unfixable: %+v", len(rep.Problems), rep.Problems)
	}
	wantFinding(t, "repair", rep.Problems, "blob", neededCorrupt.String(), "cannot re-fetch")
	wantFinding(t, "repair", rep.Problems, "image", "example.com/app:1", ghost.String())
	// No registry source is known for it: the problem names the command that restores it.
	wantFinding(t, "repair", rep.Problems, "image", "example.com/app:1", "no registry source is known (casfs image pull example.com/app:1 restores it)")
	wantFinding(t, "repair", rep.Repaired, "blob", spareCorrupt.String(), "removed the corrupt blob")
	wantFinding(t, "repair", rep.Repaired, "blob", noFile.String(), "dropped the record")
	wantFinding(t, "repair", rep.Repaired, "file", orphanD.String(), "recorded")
	wantFinding(t, "repair", rep.Repaired, "file", badOrphanD.String(), "removed")
	wantFinding(t, "repair", rep.Repaired, "ingest", `"stale"`, "removed")
	for _, k := range []string{"no-dir", "orphan-child", "extract-x", "dir cccc"} {
		wantFinding(t, "repair", rep.Repaired, "snapshot", k, "removed")
	}

	// The outcome on disk and in the index, not just the report.
	if _, err := db.Blobs().Get(ctx, spareCorrupt.String()); err == nil {
		t.Error("record of the removed corrupt blob is still there")
	}
	if _, err := s.Blobs().Info(ctx, spareCorrupt); err == nil {
		t.Error("corrupt unneeded file is still there")
	}
	if _, err := s.Blobs().Info(ctx, neededCorrupt); err != nil {
		t.Error("a corrupt blob an image needs was removed although it cannot be fetched again")
	}
	if b, err := db.Blobs().Get(ctx, orphanD.String()); err != nil || b.Size != int64(len(orphan)) {
		t.Errorf("valid orphan file not recorded: %+v %v", b, err)
	}
	if _, err := db.Blobs().Get(ctx, lazy.String()); err != nil {
		t.Error("the record of a lazy blob was dropped")
	}
	sts, _ := s.Blobs().ListStatuses(ctx)
	var refs []string
	for _, st := range sts {
		refs = append(refs, st.Ref)
	}
	if strings.Join(refs, ",") != "held,recent" {
		t.Errorf("ingests after repair: %v, want held,recent", refs)
	}
	snaps, _ := sn.List(ctx)
	if len(snaps) != 0 {
		t.Errorf("snapshots after repair: %+v", snaps)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Root(), "snapshots")); len(ents) != 0 {
		t.Errorf("snapshot directories after repair: %v", ents)
	}

	// A second repair finds only what it cannot fix, and does nothing.
	rep, err = s.Check(ctx, StoreCheckOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 2 || len(rep.Repaired) != 0 {
		t.Errorf("second repair: %+v", rep)
	}
}

// Opening the store after a crash cleans snapshot leftovers; check says so
// and counts them as repaired, not as problems.
func TestCheckReportsCleanupOnOpen(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := Open(root, Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	db, _ := s.Index()
	old := processStart.Add(-time.Hour)
	r := index.Snapshot{Key: "extract-y", ID: "dddd", Kind: index.SnapshotActive, Labels: map[string]string{layers.LabelExtracting: "sha256:y"}, CreatedAt: old}
	os.MkdirAll(filepath.Join(root, "snapshots", r.ID, "fs"), 0o755)
	db.Snapshots().Put(ctx, r.Key, r)
	s.Close()

	s, err = Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rep, err := s.Check(ctx, StoreCheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %+v", rep.Problems)
	}
	wantFinding(t, "open", rep.Repaired, "snapshot", "extract-y", "half-extracted")
	if _, err := os.Stat(filepath.Join(root, "snapshots", r.ID)); !os.IsNotExist(err) {
		t.Errorf("half-extracted snapshot directory still there: %v", err)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134`: `/x\`, `/t\01`: `/t\01`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
