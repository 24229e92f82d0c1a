package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
	"github.com/casfs/casfs/layers"
)

// gcImage builds a small image of the given layers, each a single file.
func gcImage(t *testing.T, platform string, layers ...string) *testimage.Image {
	t.Helper()
	spec := testimage.ImageSpec{}
	if platform != "" {
		os, arch, _ := strings.Cut(platform, "/")
		spec.Platform = ocispec.Platform{OS: os, Architecture: arch}
	}
	for _, l := range layers {
		spec.Layers = append(spec.Layers, testimage.Layer{Files: []testimage.File{testimage.Reg(l, 0o644, "content of "+l+"\n")}})
	}
	img, err := testimage.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func putBlob(t *testing.T, s *Local, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	if _, err := s.Ingest(context.Background(), "test-"+d.Encoded(), bytes.NewReader(b), IngestOptions{Expected: d, Size: int64(len(b))}); err != nil {
		t.Fatal(err)
	}
	return d
}

// putImage stores every blob of img (only those of the named digests when
// only is given) and records it as name; unpack makes its snapshots.
func putImage(t *testing.T, s *Local, name string, target ocispec.Descriptor, blobs map[digest.Digest][]byte, unpack bool) {
	t.Helper()
	ctx := context.Background()
	for _, b := range blobs {
		putBlob(t, s, b)
	}
	if name != "" {
		name, err := NormalizeName(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.recordImage(ctx, name, target); err != nil {
			t.Fatal(err)
		}
	}
	if unpack {
		il, err := s.imageLayers(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.unpack(ctx, il, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func chainKeys(img *testimage.Image) []string {
	var out []string
	for _, c := range layers.ChainIDs(img.DiffIDs) {
		out = append(out, c.String())
	}
	return out
}

// state is what a store holds, for before/after comparisons.
type state struct {
	files, records map[digest.Digest]bool
	snaps          map[string]bool // records whose directory exists
	leases         map[string]bool
}

func stateOf(t *testing.T, s *Local) state {
	t.Helper()
	ctx := context.Background()
	st := state{files: map[digest.Digest]bool{}, records: map[digest.Digest]bool{}, snaps: map[string]bool{}, leases: map[string]bool{}}
	if err := s.blobs.Walk(ctx, func(fi cas.Info) error { st.files[fi.Digest] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	db, _ := s.Index()
	db.Blobs().List(ctx, "", func(_ string, b index.Blob) error { st.records[b.Digest] = true; return nil })
	db.Leases().List(ctx, "", func(k string, _ index.Lease) error { st.leases[k] = true; return nil })
	db.Snapshots().List(ctx, "", func(k string, sn index.Snapshot) error {
		if _, err := os.Stat(filepath.Join(s.root, "snapshots", sn.ID, "fs")); err != nil {
			t.Errorf("snapshot %s has a record but no directory: %v", k, err)
		}
		st.snaps[k] = true
		return nil
	})
	return st
}

func TestCollectKeepsWhatRootsReach(t *testing.T) {
	testenv.RequireRoot(t) // unpacking sets owners
	ctx := context.Background()
	type want struct {
		kept, gone         []digest.Digest
		keptSnap, goneSnap []string
		goneLeases         []string
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, s *Local) want
	}{
		{"shared layers, one image removed", func(t *testing.T, s *Local) want {
			a := gcImage(t, "", "base", "only-a")
			b := gcImage(t, "", "base", "only-b")
			putImage(t, s, "lab/a:1", a.Manifest, a.Blobs, true)
			putImage(t, s, "lab/b:1", b.Manifest, b.Blobs, true)
			if err := s.RemoveImage(ctx, "lab/a:1"); err != nil {
				t.Fatal(err)
			}
			return want{
				kept:     append([]digest.Digest{b.Manifest.Digest, b.Config.Digest}, b.Layers[0].Digest, b.Layers[1].Digest),
				gone:     []digest.Digest{a.Manifest.Digest, a.Config.Digest, a.Layers[1].Digest},
				keptSnap: chainKeys(b),
				goneSnap: chainKeys(a)[1:],
			}
		}},
		{"index pulled for one platform", func(t *testing.T, s *Local) want {
			amd := gcImage(t, "linux/amd64", "amd")
			arm := gcImage(t, "linux/arm64", "arm")
			idx, err := testimage.BuildIndex([]*testimage.Image{amd, arm}, false)
			if err != nil {
				t.Fatal(err)
			}
			putImage(t, s, "lab/multi:1", idx.Desc, map[digest.Digest][]byte{idx.Desc.Digest: idx.Blobs[idx.Desc.Digest]}, false)
			putImage(t, s, "", amd.Manifest, amd.Blobs, false)
			// A stray layer of the platform not pulled: its manifest is not
			// here, so nothing reaches it.
			stray := putBlob(t, s, arm.Blobs[arm.Layers[0].Digest])
			return want{
				kept: []digest.Digest{idx.Desc.Digest, amd.Manifest.Digest, amd.Config.Digest, amd.Layers[0].Digest},
				gone: []digest.Digest{stray},
			}
		}},
		{"tags removed", func(t *testing.T, s *Local) want {
			a := gcImage(t, "", "tagged")
			putImage(t, s, "lab/t:1", a.Manifest, a.Blobs, false)
			if err := s.TagImage(ctx, "lab/t:1", []string{"lab/t:2"}); err != nil {
				t.Fatal(err)
			}
			b := gcImage(t, "", "untagged")
			putImage(t, s, "lab/u:1", b.Manifest, b.Blobs, false)
			for _, n := range []string{"lab/t:1", "lab/u:1"} {
				if err := s.RemoveImage(ctx, n); err != nil {
					t.Fatal(err)
				}
			}
			return want{
				kept: []digest.Digest{a.Manifest.Digest, a.Config.Digest, a.Layers[0].Digest},
				gone: []digest.Digest{b.Manifest.Digest, b.Config.Digest, b.Layers[0].Digest},
			}
		}},
		{"leases alive and expired", func(t *testing.T, s *Local) want {
			db, _ := s.Index()
			alive, dead, forever := putBlob(t, s, []byte("alive")), putBlob(t, s, []byte("dead")), putBlob(t, s, []byte("forever"))
			m := gcImage(t, "", "leased-manifest")
			putImage(t, s, "", m.Manifest, m.Blobs, false)
			now := time.Now().UTC()
			for _, l := range []index.Lease{
				{ID: "alive", CreatedAt: now, Expires: now.Add(time.Hour), Blobs: []digest.Digest{alive, m.Manifest.Digest}},
				{ID: "dead", CreatedAt: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour), Blobs: []digest.Digest{dead}},
				{ID: "forever", CreatedAt: now, Blobs: []digest.Digest{forever}},
			} {
				if err := db.Leases().Put(ctx, l.ID, l); err != nil {
					t.Fatal(err)
				}
			}
			// The leased manifest's record carries its media type, as a
			// pull records it, so the lease keeps its config and layer.
			if _, err := db.Blobs().Update(ctx, m.Manifest.Digest.String(), func(b *index.Blob) error {
				b.MediaType = m.Manifest.MediaType
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			return want{
				kept:       []digest.Digest{alive, forever, m.Manifest.Digest, m.Config.Digest, m.Layers[0].Digest},
				gone:       []digest.Digest{dead},
				goneLeases: []string{"dead"},
			}
		}},
		{"half-finished ingests", func(t *testing.T, s *Local) want {
			// An ingest started before another writer stored the same
			// content (once stored, a writer for it is refused).
			data := []byte("a blob being ingested, and also already here")
			w, err := s.blobs.Writer(ctx, "half", cas.WriterOpts{Expected: digest.FromBytes(data), Total: int64(len(data))})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data[:10]); err != nil {
				t.Fatal(err)
			}
			w.Close()
			d := putBlob(t, s, data)
			return want{kept: []digest.Digest{d}}
		}},
		{"gc.root and gc.ref labels", func(t *testing.T, s *Local) want {
			root, ref, plain := putBlob(t, s, []byte("root")), putBlob(t, s, []byte("ref")), putBlob(t, s, []byte("plain"))
			if _, err := s.LabelContent(ctx, root, map[string]string{index.LabelGCRoot: "x", index.LabelGCRefContent + "a": ref.String()}, nil); err != nil {
				t.Fatal(err)
			}
			return want{kept: []digest.Digest{root, ref}, gone: []digest.Digest{plain}}
		}},
		{"files without records and records without files", func(t *testing.T, s *Local) want {
			db, _ := s.Index()
			orphan := putBlob(t, s, []byte("orphan file"))
			if err := db.Blobs().Delete(ctx, orphan.String()); err != nil {
				t.Fatal(err)
			}
			lazy := digest.FromString("never fetched")
			if err := db.Blobs().Put(ctx, lazy.String(), index.Blob{Digest: lazy, Size: 13}); err != nil {
				t.Fatal(err)
			}
			return want{gone: []digest.Digest{orphan, lazy}}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t)
			w := tc.setup(t, s)
			before := stateOf(t, s)

			dry, err := s.Collect(ctx, CollectOptions{DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if after := stateOf(t, s); !sameState(before, after) {
				t.Fatalf("dry run changed the store:\nbefore %+v\nafter  %+v", before, after)
			}
			rep, err := s.Collect(ctx, CollectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !sameRemoved(dry, rep) {
				t.Errorf("dry run reported %+v, the collection did %+v", dry, rep)
			}
			after := stateOf(t, s)
			for _, d := range w.kept {
				if !after.files[d] || !after.records[d] {
					t.Errorf("%s was collected (file %v, record %v)", d, after.files[d], after.records[d])
				}
			}
			for _, d := range w.gone {
				if after.files[d] || after.records[d] {
					t.Errorf("%s survived (file %v, record %v)", d, after.files[d], after.records[d])
				}
				if !slices.ContainsFunc(rep.Blobs, func(b RemovedBlob) bool { return b.Digest == d }) {
					t.Errorf("report does not list %s: %+v", d, rep.Blobs)
				}
			}
			for _, k := range w.keptSnap {
				if !after.snaps[k] {
					t.Errorf("snapshot %s was collected", k)
				}
			}
			for _, k := range w.goneSnap {
				if after.snaps[k] {
					t.Errorf("snapshot %s survived", k)
				}
			}
			for _, id := range w.goneLeases {
				if after.leases[id] || !slices.Contains(rep.Leases, id) {
					t.Errorf("expired lease %s: still there %v, reported %v", id, after.leases[id], rep.Leases)
				}
			}
			// Everything not named as gone is still there.
			removed := len(before.files) + len(before.records) - len(after.files) - len(after.records)
			want := 0
			for _, d := range w.gone {
				if before.files[d] {
					want++
				}
				if before.records[d] {
					want++
				}
			}
			if removed != want {
				t.Errorf("%d files and records removed, want %d: report %+v", removed, want, rep)
			}
			var sum int64
			for _, b := range rep.Blobs {
				sum += b.Size
			}
			for _, sn := range rep.Snapshots {
				sum += sn.Size
			}
			if rep.Reclaimed != sum {
				t.Errorf("reclaimed %d, the items add up to %d", rep.Reclaimed, sum)
			}
			// A second collection finds nothing more.
			if again, err := s.Collect(ctx, CollectOptions{}); err != nil || len(again.Blobs)+len(again.Snapshots)+len(again.Leases) != 0 {
				t.Errorf("second collection: %+v %v", again, err)
			}
			if sts, _ := s.ActiveIngests(ctx); tc.name == "half-finished ingests" && (len(sts) != 1 || sts[0].Offset != 10) {
				t.Errorf("ingest in progress after collection: %+v", sts)
			}
		})
	}
}

func sameState(a, b state) bool {
	eq := func(x, y map[digest.Digest]bool) bool {
		if len(x) != len(y) {
			return false
		}
		for k := range x {
			if !y[k] {
				return false
			}
		}
		return true
	}
	eqs := func(x, y map[string]bool) bool {
		if len(x) != len(y) {
			return false
		}
		for k := range x {
			if !y[k] {
				return false
			}
		}
		return true
	}
	return eq(a.files, b.files) && eq(a.records, b.records) && eqs(a.snaps, b.snaps) && eqs(a.leases, b.leases)
}

func sameRemoved(dry, real GCReport) bool {
	return dry.DryRun && !real.DryRun && dry.Reclaimed == real.Reclaimed &&
		slices.Equal(dry.Blobs, real.Blobs) && slices.Equal(dry.Snapshots, real.Snapshots) && slices.Equal(dry.Leases, real.Leases)
}

func TestCollectScopes(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s := openTemp(t)
	a := gcImage(t, "", "scoped")
	putImage(t, s, "lab/a:1", a.Manifest, a.Blobs, true)
	if err := s.RemoveImage(ctx, "lab/a:1"); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Collect(ctx, CollectOptions{Snapshots: true})
	if err != nil || len(rep.Blobs) != 0 || len(rep.Snapshots) != 1 || rep.Snapshots[0].Key != chainKeys(a)[0] || rep.Snapshots[0].Size <= 0 {
		t.Fatalf("snapshot prune: %+v %v", rep, err)
	}
	rep, err = s.Collect(ctx, CollectOptions{Content: true})
	if err != nil || len(rep.Blobs) != 3 || len(rep.Snapshots) != 0 {
		t.Fatalf("content prune: %+v %v", rep, err)
	}
}

func TestPruneImages(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	db, _ := s.Index()
	a := gcImage(t, "", "a")
	b := gcImage(t, "", "b")
	c := gcImage(t, "", "c")
	putImage(t, s, "lab/a:1", a.Manifest, a.Blobs, false)
	putImage(t, s, "lab/a@"+a.Manifest.Digest.String(), a.Manifest, nil, false)     // a tag points at it too: dangling
	putImage(t, s, "lab/b@"+b.Manifest.Digest.String(), b.Manifest, b.Blobs, false) // its only name: kept
	putImage(t, s, "lab/c:1", c.Manifest, c.Blobs, false)
	// An image mount uses lab/c:1 (recorded as the mount code does).
	if err := db.Leases().Put(ctx, "mount-x", index.Lease{ID: "mount-x", CreatedAt: time.Now(), Labels: map[string]string{labelMountImage: "docker.io/lab/c:1"}}); err != nil {
		t.Fatal(err)
	}

	rep, err := s.PruneImages(ctx, ImagePruneOptions{})
	if err != nil || !slices.Equal(rep.Images, []string{"docker.io/lab/a@" + a.Manifest.Digest.String()}) || len(rep.Blobs) != 0 {
		t.Fatalf("prune: %+v %v", rep, err)
	}
	dry, err := s.PruneImages(ctx, ImagePruneOptions{All: true, DryRun: true})
	if err != nil || len(dry.Images) != 2 || len(dry.Blobs) != 6 {
		t.Fatalf("prune --all --dry-run: %+v %v", dry, err)
	}
	if imgs, _ := s.ListImages(ctx); len(imgs) != 3 {
		t.Fatalf("dry run removed images: %+v", imgs)
	}
	rep, err = s.PruneImages(ctx, ImagePruneOptions{All: true})
	if err != nil || !slices.Equal(rep.Images, dry.Images) || !slices.Equal(rep.Blobs, dry.Blobs) {
		t.Fatalf("prune --all: %+v %v (dry run said %+v)", rep, err, dry)
	}
	imgs, _ := s.ListImages(ctx)
	if len(imgs) != 1 || imgs[0].Name != "docker.io/lab/c:1" {
		t.Fatalf("left after prune --all: %+v", imgs)
	}
	if _, err := s.ContentInfo(ctx, c.Layers[0].Digest); err != nil {
		t.Fatalf("the mounted image's layer: %v", err)
	}
}

func TestRemoveContentRefusesNeededBlobs(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	a := gcImage(t, "", "needed")
	putImage(t, s, "lab/a:1", a.Manifest, a.Blobs, false)
	err := s.RemoveContent(ctx, a.Layers[0].Digest)
	if !errors.Is(err, errdefs.ErrInUse) || !strings.Contains(err.Error(), "image docker.io/lab/a:1") {
		t.Fatalf("remove a needed layer: %v", err)
	}
	if _, err := s.ContentInfo(ctx, a.Layers[0].Digest); err != nil {
		t.Fatalf("refused removal removed it: %v", err)
	}
	if _, err := s.CreateLease(ctx, LeaseOptions{ID: "keep"}); err != nil {
		t.Fatal(err)
	}
	free := putBlob(t, s, []byte("free"))
	if err := s.RemoveContent(ctx, free); err != nil {
		t.Fatalf("remove an unneeded blob: %v", err)
	}
	if err := s.ForceRemoveContent(ctx, a.Layers[0].Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.root, "blobs", "sha256", a.Layers[0].Digest.Encoded())); !os.IsNotExist(err) {
		t.Fatalf("forced removal left the file: %v", err)
	}
}

func TestLeases(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	l, err := s.CreateLease(ctx, LeaseOptions{ID: "my-lease", Expires: time.Hour, Labels: map[string]string{"k": "v"}})
	if err != nil || l.ID != "my-lease" || l.Expires.Sub(l.CreatedAt) != time.Hour || l.Labels["k"] != "v" {
		t.Fatalf("create: %+v %v", l, err)
	}
	if _, err := s.CreateLease(ctx, LeaseOptions{ID: "my-lease"}); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("create twice: %v", err)
	}
	for _, bad := range []string{"a/b", "-x", strings.Repeat("x", 77), "sp ace"} {
		if _, err := s.CreateLease(ctx, LeaseOptions{ID: bad}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("create %q: %v", bad, err)
		}
	}
	r, err := s.CreateLease(ctx, LeaseOptions{})
	if err != nil || index.ValidateLeaseID(r.ID) != nil || !r.Expires.IsZero() {
		t.Fatalf("create with a random id: %+v %v", r, err)
	}
	ls, err := s.ListLeases(ctx)
	if err != nil || len(ls) != 2 {
		t.Fatalf("list: %+v %v", ls, err)
	}
	if err := s.RemoveLease(ctx, "my-lease"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveLease(ctx, "my-lease"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
}

// An operation's lease records what it touches before it looks, and is
// gone when the operation ends.
func TestHoldLeaseRecordsResources(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	lctx, release, err := s.HoldLease(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("x")
	for range 2 {
		if err := index.AddToLease(lctx, []digest.Digest{d}, "snap", ""); err != nil {
			t.Fatal(err)
		}
	}
	ls, _ := s.ListLeases(ctx)
	if len(ls) != 1 || !slices.Equal(ls[0].Blobs, []digest.Digest{d}) || !slices.Equal(ls[0].Snapshots, []string{"snap"}) || ls[0].Expires.IsZero() {
		t.Fatalf("operation lease: %+v", ls)
	}
	// A nested operation uses the lease it runs under.
	if nctx, nrel, err := s.HoldLease(lctx, "nested"); err != nil || nctx != lctx {
		t.Fatalf("nested lease: %v", err)
	} else {
		nrel()
	}
	release()
	if ls, _ := s.ListLeases(ctx); len(ls) != 0 {
		t.Fatalf("lease left after release: %+v", ls)
	}
}

// A collection running while a pull re-references blobs and snapshots that
// a removed image left behind never breaks the pull.
func TestCollectDuringPull(t *testing.T) {
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ctx := context.Background()
	a := gcImage(t, "", "base", "mid", "only-a")
	b := gcImage(t, "", "base", "mid", "only-b")
	for name, img := range map[string]*testimage.Image{"a": a, "b": b} {
		if err := testimage.Push(ctx, reg.URL, "lab/"+name, "1", img.Blobs, img.Manifest, reg.Client()); err != nil {
			t.Fatal(err)
		}
	}
	opts := PullOptions{RegistryOptions: RegistryOptions{PlainHTTP: true, HostsDir: t.TempDir()}}
	s := openTemp(t)
	refA, refB := reg.Ref("lab/a", "1"), reg.Ref("lab/b", "1")
	for round := range 6 {
		if _, err := s.Pull(ctx, refA, opts); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveImage(ctx, refA); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := s.Pull(ctx, refB, opts)
			done <- err
		}()
		collections := 0
	loop:
		for {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("round %d: pull during collection: %v", round, err)
				}
				break loop
			default:
				if _, err := s.Collect(ctx, CollectOptions{}); err != nil {
					t.Fatalf("round %d: collect: %v", round, err)
				}
				collections++
			}
		}
		rep, err := s.CheckImage(ctx, refB, CheckOptions{})
		if err != nil || len(rep.Problems) != 0 || rep.Layers != 3 {
			t.Fatalf("round %d (%d collections during the pull): image b after the pull: %+v %v", round, collections, rep, err)
		}
		st := stateOf(t, s)
		for d := range b.Blobs {
			if !st.files[d] || !st.records[d] {
				t.Fatalf("round %d: blob %s of b missing (file %v, record %v)", round, d, st.files[d], st.records[d])
			}
		}
		if ls, _ := s.ListLeases(ctx); len(ls) != 0 {
			t.Fatalf("round %d: leases left after the pull: %+v", round, ls)
		}
		// Start the next round from an empty store.
		if err := s.RemoveImage(ctx, refB); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Collect(ctx, CollectOptions{}); err != nil {
			t.Fatal(err)
		}
		if st := stateOf(t, s); len(st.files)+len(st.records)+len(st.snaps) != 0 {
			t.Fatalf("round %d: store not empty after removing everything: %+v", round, st)
		}
	}
}
