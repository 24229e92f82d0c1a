package layers

import (
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"golang.org/x/sys/unix"
)

func openStore(t *testing.T, root string) (*Snapshotter, *index.DB) {
	t.Helper()
	db, err := index.Open(filepath.Join(root, "meta"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSnapshotter(root, db)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	return s, db
}

func newSnapshotter(t *testing.T) (*Snapshotter, string) {
	t.Helper()
	root := t.TempDir()
	s, db := openStore(t, root)
	t.Cleanup(func() { db.Close() })
	return s, root
}

func snapshotDirs(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestChainIDs(t *testing.T) {
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	h := func(s string) digest.Digest {
		sum := sha256.Sum256([]byte(s))
		return digest.Digest("sha256:" + hex.EncodeToString(sum[:]))
	}
	ab := h(a.String() + " " + b.String())
	want := []digest.Digest{a, ab, h(ab.String() + " " + c.String())}
	got := ChainIDs([]digest.Digest{a, b, c})
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("got %v, want %v", got, want)
	}
	if len(ChainIDs(nil)) != 0 {
		t.Fatal("chain of nothing is not empty")
	}
}

func TestSnapshotterLifecycle(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s, root := newSnapshotter(t)

	fsA, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(fsA); err != nil || len(ents) != 0 {
		t.Fatalf("new snapshot dir: %v %v", ents, err)
	}
	if err := os.WriteFile(filepath.Join(fsA, "f"), bytes.Repeat([]byte("x"), 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "a", ""); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("prepare twice: %v", err)
	}
	if rec, err := s.Stat(ctx, "a"); err != nil || rec.Kind != index.SnapshotActive || rec.Parent != "" {
		t.Fatalf("stat active: %+v %v", rec, err)
	}
	size, inodes, err := s.Usage(ctx, "a")
	if err != nil || size < 10000 || inodes != 2 {
		t.Fatalf("usage of active: %d bytes %d inodes %v", size, inodes, err)
	}
	if err := s.Commit(ctx, "base", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("active key after commit: %v", err)
	}
	base, err := s.Stat(ctx, "base")
	if err != nil || base.Kind != index.SnapshotCommitted || base.Size != size || base.Inodes != 2 {
		t.Fatalf("committed: %+v %v", base, err)
	}
	if _, err := s.Prepare(ctx, "x", "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing parent: %v", err)
	}
	fsB, err := s.Prepare(ctx, "b", "base")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "c", "b"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("active parent: %v", err)
	}
	if err := s.Commit(ctx, "base", "b"); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("commit onto an existing name: %v", err)
	}
	if err := s.Commit(ctx, "again", "base"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("commit of a committed snapshot: %v", err)
	}
	lowers, err := s.Lowers(ctx, "b")
	if err != nil || len(lowers) != 2 || lowers[0] != fsB || lowers[1] != fsA {
		t.Fatalf("lowers: %v %v (want %s %s)", lowers, err, fsB, fsA)
	}

	// A writable mount of the active snapshot writes into its own dir.
	mnt := t.TempDir()
	parentLowers, err := s.Lowers(ctx, "base")
	if err != nil {
		t.Fatal(err)
	}
	if err := mountPath(mnt, parentLowers, fsB, s.WorkDir(fsB), false); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || len(b) != 10000 {
		t.Errorf("lower file through the mount: %d bytes, %v", len(b), err)
	}
	werr := os.WriteFile(filepath.Join(mnt, "new"), []byte("n"), 0o644)
	if err := Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatal(werr)
	}
	if b, err := os.ReadFile(filepath.Join(fsB, "new")); err != nil || string(b) != "n" {
		t.Errorf("write through the mount: %q %v", b, err)
	}

	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].Key != "b" || list[1].Key != "base" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := s.Remove(ctx, "base"); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "b") {
		t.Fatalf("remove with a child: %v", err)
	}
	if err := s.Remove(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "base"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "base"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	if list, _ := s.List(ctx); len(list) != 0 {
		t.Fatalf("records left: %+v", list)
	}
	if d := snapshotDirs(t, root); len(d) != 0 {
		t.Fatalf("directories left: %v", d)
	}
}

// imageLayers is a three-layer image as gzip blobs with diff IDs.
type testLayer struct {
	blob   []byte
	diffID digest.Digest
}

func gzLayers(t *testing.T, stack [][]tent) []testLayer {
	var out []testLayer
	for _, ents := range stack {
		tb := mkTar(t, ents...)
		out = append(out, testLayer{blob: gz(t, tb), diffID: digest.FromBytes(tb)})
	}
	return out
}

func TestSnapshotterUnpack(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s, root := newSnapshotter(t)
	layers := gzLayers(t, [][]tent{
		{tDir("etc", 0o755), tFile("etc/a", 0o644, "a"), tFile("etc/b", 0o644, "b"), tFile("bin", 0o755, "bin")},
		{tWh("etc/a"), tHard("sbin/bin", "bin")},
		{tOpq("etc"), tFile("etc/c", 0o600, "c")},
	})
	var diffIDs []digest.Digest
	for _, l := range layers {
		diffIDs = append(diffIDs, l.diffID)
	}
	chain := ChainIDs(diffIDs)
	var ids []string
	for i, l := range layers {
		parent := ""
		if i > 0 {
			parent = chain[i-1].String()
		}
		rec, err := s.Unpack(ctx, chain[i].String(), parent, bytes.NewReader(l.blob), ocispec.MediaTypeImageLayerGzip, l.diffID)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if rec.Key != chain[i].String() || rec.Parent != parent || rec.Kind != index.SnapshotCommitted || rec.Labels[LabelDiffID] != l.diffID.String() || rec.Labels[LabelExtracting] != "" {
			t.Fatalf("layer %d: record %+v", i, rec)
		}
		ids = append(ids, rec.ID)
	}
	mnt := t.TempDir()
	top, err := s.Lowers(ctx, chain[2].String())
	if err != nil {
		t.Fatal(err)
	}
	if err := mountPath(mnt, top, "", "", true); err != nil {
		t.Fatal(err)
	}
	got := listTree(t, mnt, listOpts{})
	if err := Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	diffListing(t, "unpacked image", got, expectListing([]exp{
		eDir("etc", 0o755), eFile("etc/c", 0o600, "c"), eFile("bin", 0o755, "bin"), eDir("sbin", 0o755), eFile("sbin/bin", 0o755, "bin"),
	}, []string{"bin", "sbin/bin"}))

	// Idempotent: the same snapshot, nothing read, nothing new on disk.
	rec, err := s.Unpack(ctx, chain[1].String(), chain[0].String(), strings.NewReader("not even gzip"), ocispec.MediaTypeImageLayerGzip, layers[1].diffID)
	if err != nil || rec.ID != ids[1] {
		t.Fatalf("second unpack: %+v %v", rec, err)
	}
	if d := snapshotDirs(t, root); len(d) != 3 {
		t.Fatalf("snapshot dirs: %v", d)
	}

	// Failures keep nothing.
	other := gzLayers(t, [][]tent{{tFile("x", 0o644, "x")}})[0]
	wrong := digest.FromString("something else")
	otherChain := ChainIDs([]digest.Digest{chain[2], other.diffID})[1].String()
	_, err = s.Unpack(ctx, otherChain, chain[2].String(), bytes.NewReader(other.blob), ocispec.MediaTypeImageLayerGzip, wrong)
	if !errors.Is(err, errdefs.ErrDigestMismatch) || !strings.Contains(err.Error(), other.diffID.String()) || !strings.Contains(err.Error(), wrong.String()) {
		t.Fatalf("wrong diff id: %v", err)
	}
	_, err = s.Unpack(ctx, otherChain, chain[2].String(), bytes.NewReader(other.blob), "application/octet-stream", other.diffID)
	if !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Fatalf("wrong media type: %v", err)
	}
	_, err = s.Unpack(ctx, otherChain, chain[2].String(), bytes.NewReader(other.blob[:len(other.blob)-10]), ocispec.MediaTypeImageLayerGzip, other.diffID)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
	hostile := gzLayers(t, [][]tent{{tHard("h", "../../../../etc/passwd")}})[0]
	_, err = s.Unpack(ctx, otherChain, chain[2].String(), bytes.NewReader(hostile.blob), ocispec.MediaTypeImageLayerGzip, hostile.diffID)
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("hostile layer: %v", err)
	}
	_, err = s.Unpack(ctx, otherChain, "sha256:nope", bytes.NewReader(other.blob), ocispec.MediaTypeImageLayerGzip, other.diffID)
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing parent: %v", err)
	}
	if list, _ := s.List(ctx); len(list) != 3 {
		t.Fatalf("records after failures: %+v", list)
	}
	if d := snapshotDirs(t, root); len(d) != 3 {
		t.Fatalf("snapshot dirs after failures: %v", d)
	}
}

func TestSnapshotterConcurrentUnpack(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s, root := newSnapshotter(t)
	l := gzLayers(t, [][]tent{{tFile("big", 0o644, randomBytes(t, 1<<20)), tFile("small", 0o644, "s")}})[0]
	const n = 8
	recs := make([]index.Snapshot, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i], errs[i] = s.Unpack(ctx, l.diffID.String(), "", bytes.NewReader(l.blob), ocispec.MediaTypeImageLayerGzip, l.diffID)
		}()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		if errs[i] != nil || recs[i].ID != recs[0].ID {
			t.Fatalf("unpack %d: %+v %v (first got %s)", i, recs[i], errs[i], recs[0].ID)
		}
	}
	if list, _ := s.List(ctx); len(list) != 1 {
		t.Fatalf("records: %+v", list)
	}
	if d := snapshotDirs(t, root); len(d) != 1 || d[0] != recs[0].ID {
		t.Fatalf("dirs: %v", d)
	}
}

func TestSnapshotterCleansUpAfterCrash(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	root := t.TempDir()
	s, db := openStore(t, root)
	l := gzLayers(t, [][]tent{{tFile("a", 0o644, "a")}})[0]
	committed, err := s.Unpack(ctx, l.diffID.String(), "", bytes.NewReader(l.blob), ocispec.MediaTypeImageLayer+"+gzip", l.diffID)
	if err != nil {
		t.Fatal(err)
	}
	// What a crash mid-extraction leaves: an active snapshot marked
	// extracting, with some files, and a directory without a record.
	half, err := s.prepare(ctx, "extract-crashed", l.diffID.String(), true, map[string]string{LabelExtracting: "sha256:x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.fsDir(half.ID), "partial"), []byte("p"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "snapshots", "stray", "fs", "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "user-work", l.diffID.String()); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, db = openStore(t, root)
	defer db.Close()
	if _, err := s.Stat(ctx, "extract-crashed"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("half-extracted snapshot survived: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "snapshots", half.ID)); !os.IsNotExist(err) {
		t.Errorf("half-extracted dir survived: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "snapshots", "stray")); !os.IsNotExist(err) {
		t.Errorf("stray dir survived: %v", err)
	}
	if rec, err := s.Stat(ctx, l.diffID.String()); err != nil || rec.ID != committed.ID {
		t.Errorf("committed snapshot: %+v %v", rec, err)
	}
	if _, err := s.Stat(ctx, "user-work"); err != nil {
		t.Errorf("active snapshot of a user: %v", err)
	}
	if d := snapshotDirs(t, root); len(d) != 2 {
		t.Errorf("dirs: %v", d)
	}
}

// diskUsage counts every inode of a nested tree once (hardlinks too) and
// adds up the blocks that a plain walk with lstat finds.
func TestDiskUsageNestedTree(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "d", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "e", "f"), bytes.Repeat([]byte("x"), 70000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "d", "e", "f"), filepath.Join(dir, "g")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d/e/f", filepath.Join(dir, "d", "s")); err != nil {
		t.Fatal(err)
	}
	var want int64
	seen := map[uint64]bool{}
	filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		var st unix.Stat_t
		if err == nil && unix.Lstat(p, &st) == nil && !seen[st.Ino] {
			seen[st.Ino] = true
			want += st.Blocks * 512
		}
		return err
	})
	size, inodes, err := diskUsage(dir)
	if err != nil || inodes != 5 || size != want || size < 70000 {
		t.Fatalf("usage: %d bytes %d inodes %v; want %d bytes, 5 inodes (root, d, e, f=g, s)", size, inodes, err, want)
	}
}

// A tar that ends without its end-of-archive blocks, as zstd:chunked
// layers do, unpacks when its diff ID pins the stream; cut short of an
// entry, the same stream fails its diff ID.
func TestUnpackUnterminatedTarPinnedByDiffID(t *testing.T) {
	t.Parallel()
	s, _ := newSnapshotter(t)
	ctx := context.Background()
	whole := mkTar(t, tFile("a", 0o644, "first\n"), tFile("b", 0o644, "second\n"))
	open := whole[:len(whole)-1024] // without the two zero blocks
	chain := "sha256:" + strings.Repeat("c", 64)
	if _, err := s.Unpack(ctx, chain, "", bytes.NewReader(open), ocispec.MediaTypeImageLayer, digest.FromBytes(open)); err != nil {
		t.Fatalf("unterminated tar with its diff ID: %v", err)
	}
	dirs, err := s.Lowers(ctx, chain)
	if err != nil || len(dirs) != 1 {
		t.Fatalf("lowers %v, %v", dirs, err)
	}
	if b, err := os.ReadFile(filepath.Join(dirs[0], "b")); err != nil || string(b) != "second\n" {
		t.Fatalf("b = %q, %v", b, err)
	}
	cut := open[:len(open)-1024] // the second entry's header and data gone
	_, err = s.Unpack(ctx, "sha256:"+strings.Repeat("d", 64), "", bytes.NewReader(cut), ocispec.MediaTypeImageLayer, digest.FromBytes(open))
	if !errors.Is(err, errdefs.ErrDigestMismatch) {
		t.Fatalf("a tar cut after an entry, with the whole stream's diff ID: %v, want a digest mismatch", err)
	}
}
