package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

type snapshotRow struct {
	Key    string            `json:"key"`
	Parent string            `json:"parent"`
	Kind   string            `json:"kind"`
	ID     string            `json:"id"`
	Labels map[string]string `json:"labels"`
}

func snapshotList(t *testing.T, c *cli) []snapshotRow {
	t.Helper()
	var rows []snapshotRow
	if err := json.Unmarshal([]byte(c.OK(nil, "snapshot", "ls", "--format", "json")), &rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

// chainIDs computes an image's chain IDs independently of casfs.
func chainIDs(diffIDs []digest.Digest) []string {
	var out []string
	var prev digest.Digest
	for i, d := range diffIDs {
		if i == 0 {
			prev = d
		} else {
			prev = digest.FromString(prev.String() + " " + d.String())
		}
		out = append(out, prev.String())
	}
	return out
}

func mkdirTarget(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "target")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, leave no mount behind.
	t.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
	return d
}

func TestImageMountReadOnlyAndWritable(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/busybox", "1", img)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--plain-http", ref)

	// Read-only: the merged layers, writes refused.
	target := mkdirTarget(t)
	if got := strings.TrimSpace(c.OK(nil, "image", "mount", ref, target)); got != target {
		t.Fatalf("image mount printed %q, want %q", got, target)
	}
	if b, err := os.ReadFile(filepath.Join(target, "etc", "motd")); err != nil || string(b) != "hello from casfs\n" {
		t.Fatalf("motd in read-only mount: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(target, "etc", "gone")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("whited-out file visible: %v", err)
	}
	if err := os.WriteFile(filepath.Join(target, "etc", "new"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write into read-only mount: %v, want EROFS", err)
	}
	c.Fail(1, nil, []string{"image", "mount", ref, target}, "already")
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(mkdirTarget(t), link)
	c.Fail(2, nil, []string{"image", "mount", ref, link}, "symbolic link")
	c.OK(nil, "image", "unmount", target)
	if _, err := os.Stat(filepath.Join(target, "etc")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("target still shows the image after unmount: %v", err)
	}
	c.Fail(1, nil, []string{"image", "unmount", target}, "no image mount")

	// Writable: changes survive an unmount without --rm.
	c.OK(nil, "image", "mount", "--rw", ref, target)
	if err := os.WriteFile(filepath.Join(target, "etc", "state"), []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(target, "etc", "motd")); err != nil {
		t.Fatal(err)
	}
	c.OK(nil, "image", "unmount", target)
	c.Fail(1, nil, []string{"image", "mount", ref, target}, "writable snapshot")
	c.OK(nil, "image", "mount", "--rw", ref, target)
	if b, err := os.ReadFile(filepath.Join(target, "etc", "state")); err != nil || string(b) != "kept\n" {
		t.Fatalf("writable layer lost across unmount: %q %v", b, err)
	}
	// A container runs with the mount as its root.
	if out := runcRun(t, target, "/bin/sh", "-c", "cat /etc/state; ls /etc"); out != "kept\nstate\n" {
		t.Fatalf("runc output %q", out)
	}
	var active []string
	for _, s := range snapshotList(t, c) {
		if s.Kind == "active" {
			active = append(active, s.Key)
		}
	}
	if len(active) != 1 || !strings.HasPrefix(active[0], "mount-") {
		t.Fatalf("active snapshots while mounted rw: %v", active)
	}
	c.Fail(1, nil, []string{"snapshot", "rm", active[0]}, "image mount")

	c.OK(nil, "image", "unmount", "--rm", target)
	for _, s := range snapshotList(t, c) {
		if s.Kind == "active" {
			t.Fatalf("writable snapshot %s left after unmount --rm", s.Key)
		}
	}
	c.OK(nil, "image", "mount", "--rw", ref, target)
	if _, err := os.Stat(filepath.Join(target, "etc", "state")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("old writes visible after unmount --rm: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(target, "etc", "motd")); string(b) != "hello from casfs\n" {
		t.Fatalf("motd after unmount --rm and remount: %q", b)
	}
	c.OK(nil, "image", "unmount", "--rm", target)

	// A target that is some other mount point is refused.
	if err := unix.Mount("tmpfs", target, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	c.Fail(1, nil, []string{"image", "mount", ref, target}, "already a mount point")
	unix.Unmount(target, 0)
}

// TestImageMountThroughDaemon: with the mount daemon owning the store, the
// same commands work through its socket.
func TestImageMountThroughDaemon(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/busybox", "1", img)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--plain-http", ref)
	mountCASFS(t, c)
	target := mkdirTarget(t)
	c.OK(nil, "image", "mount", "--rw", ref, target)
	if b, err := os.ReadFile(filepath.Join(target, "etc", "motd")); err != nil || string(b) != "hello from casfs\n" {
		t.Fatalf("motd through a daemon-made mount: %q %v", b, err)
	}
	if out := c.OK(nil, "image", "check", ref); !strings.Contains(out, ": ok") {
		t.Fatalf("image check through the daemon: %q", out)
	}
	if n := len(lines(c.OK(nil, "snapshot", "ls", "-q"))); n != 3 {
		t.Fatalf("snapshot ls through the daemon: %d snapshots, want 2 layers + 1 writable", n)
	}
	c.OK(nil, "image", "unmount", "--rm", target)
	if n := len(lines(c.OK(nil, "snapshot", "usage"))); n != 3 {
		t.Fatalf("snapshot usage through the daemon: %d lines, want header + 2", n)
	}
}

func TestImageCheck(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/busybox", "1", img)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--plain-http", ref)

	out := c.OK(nil, "image", "check", "--verify-diffs", ref)
	if want := fmt.Sprintf("%s: ok (manifest %s, 4 blobs present, 2 layers unpacked)\n", ref, img.Manifest.Digest); out != want {
		t.Fatalf("clean check printed %q, want %q", out, want)
	}

	// A corrupt layer: same size, other bytes. Only re-hashing sees it.
	top := img.Layers[1].Digest
	p := filepath.Join(c.Root, "blobs", "sha256", top.Encoded())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o444); err != nil {
		t.Fatal(err)
	}
	c.OK(nil, "image", "check", ref)
	r := c.Fail(1, nil, []string{"image", "check", "--verify-diffs", ref}, "1 problem")
	if got := lines(r.Stdout); len(got) != 1 || !strings.HasPrefix(got[0], top.String()+": layer 1: ") || !strings.Contains(got[0], "corrupt") {
		t.Fatalf("check of a corrupt layer printed %q", r.Stdout)
	}

	// A deleted blob is named without re-hashing.
	base := img.Layers[0].Digest
	if err := os.Remove(filepath.Join(c.Root, "blobs", "sha256", base.Encoded())); err != nil {
		t.Fatal(err)
	}
	r = c.Fail(1, nil, []string{"image", "check", ref}, "check "+ref, "1 problem")
	if got := lines(r.Stdout); len(got) != 1 || got[0] != base.String()+": blob is missing from the store" {
		t.Fatalf("check of a missing blob printed %q", r.Stdout)
	}
	c.Fail(1, nil, []string{"image", "check", "lab/nothing:1"}, "not found")
	c.Fail(2, nil, []string{"image", "check"}, "wrong number of arguments")
}

func TestSnapshotCommandsAndSharedLayers(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := []testimage.File{testimage.Dir("etc", 0o755), testimage.Reg("etc/base", 0o644, "shared base\n")}
	build := func(top string) *testimage.Image {
		img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{
			{Files: base}, {Files: []testimage.File{testimage.Reg("top", 0o644, top)}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	a, b := build("a\n"), build("bb\n")
	refA := pushTestImage(t, reg, "lab/a", "1", a)
	refB := pushTestImage(t, reg, "lab/b", "1", b)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--plain-http", refA)
	c.OK(nil, "image", "pull", "-q", "--plain-http", refB)

	chainA, chainB := chainIDs(a.DiffIDs), chainIDs(b.DiffIDs)
	if chainA[0] != chainB[0] {
		t.Fatal("test images do not share their base layer")
	}
	rows := snapshotList(t, c)
	if len(rows) != 3 {
		t.Fatalf("snapshot ls: %d snapshots, want 3 (base shared): %+v", len(rows), rows)
	}
	baseIDs := map[string]bool{}
	for _, r := range rows {
		if r.Key == chainA[0] {
			baseIDs[r.ID] = true
		}
		if r.Key == chainA[1] || r.Key == chainB[1] {
			if r.Parent != chainA[0] {
				t.Fatalf("snapshot %s has parent %q, want the shared base %s", r.Key, r.Parent, chainA[0])
			}
		}
	}
	if len(baseIDs) != 1 {
		t.Fatalf("base snapshot ids: %v", baseIDs)
	}
	dirs, _ := os.ReadDir(filepath.Join(c.Root, "snapshots"))
	if len(dirs) != 3 {
		t.Fatalf("%d snapshot directories on disk, want 3", len(dirs))
	}

	table := lines(c.OK(nil, "snapshot", "ls"))
	if len(table) != 4 || strings.Join(strings.Fields(table[0]), " ") != "KEY PARENT KIND" {
		t.Fatalf("snapshot ls table:\n%s", strings.Join(table, "\n"))
	}
	for _, l := range table[1:] {
		f := strings.Fields(l)
		if f[len(f)-1] != "committed" {
			t.Fatalf("snapshot ls row %q", l)
		}
	}
	usage := lines(c.OK(nil, "snapshot", "usage", chainA[0]))
	if len(usage) != 2 || strings.Join(strings.Fields(usage[0]), " ") != "KEY SIZE INODES" {
		t.Fatalf("snapshot usage:\n%s", strings.Join(usage, "\n"))
	}
	// The base has its root, etc/ and etc/base: 3 inodes, some KiB.
	if f := strings.Fields(usage[1]); len(f) != 4 || f[0] != chainA[0] || f[2] != "KiB" || f[3] != "3" {
		t.Fatalf("snapshot usage row %q", usage[1])
	}
	if n := len(lines(c.OK(nil, "snapshot", "usage"))); n != 4 {
		t.Fatalf("snapshot usage of all: %d lines", n)
	}

	c.Fail(1, nil, []string{"snapshot", "rm", chainA[0]}, chainA[0], "based on it")
	if got := strings.TrimSpace(c.OK(nil, "snapshot", "rm", chainB[1])); got != chainB[1] {
		t.Fatalf("snapshot rm printed %q", got)
	}
	if n := len(snapshotList(t, c)); n != 2 {
		t.Fatalf("after rm: %d snapshots", n)
	}
	c.Fail(1, nil, []string{"snapshot", "rm", chainB[1]}, "not found")
	c.Fail(1, nil, []string{"snapshot", "usage", chainB[1]}, "not found")
	c.Fail(2, nil, []string{"snapshot", "rm"}, "wrong number of arguments")
	// check names the layer whose snapshot went away.
	r := c.Fail(1, nil, []string{"image", "check", refB}, "1 problem")
	if !strings.Contains(r.Stdout, b.Layers[1].Digest.String()+": layer 1 is not unpacked") {
		t.Fatalf("check after snapshot rm printed %q", r.Stdout)
	}
}

// layeredImage has what makes layers depend on the ones below: implicit
// parent directories, hardlinks to lower files, whiteouts, opaque dirs.
func layeredImage(t *testing.T) *testimage.Image {
	t.Helper()
	big := strings.Repeat("0123456789abcdef", 1<<14)
	l0 := []testimage.File{
		{Path: "srv", Mode: fs.ModeDir | 0o750, Uid: 1000, Gid: 1000},
		{Path: "srv/data", Mode: fs.ModeDir | 0o700, Uid: 1000, Gid: 1000},
		testimage.Reg("srv/data/a", 0o644, "a\n"),
		testimage.Reg("srv/data/big", 0o600, big),
		testimage.Reg("srv/keep", 0o644, "keep\n"),
		{Path: "srv/samelink", Hardlink: true, Linkname: "srv/keep"},
		testimage.Dir("opt", 0o755), testimage.Reg("opt/old", 0o644, "old\n"),
	}
	l1 := []testimage.File{
		testimage.Reg("srv/data/new", 0o640, "new in layer 1\n"), // srv, srv/data implicit
		{Path: "srv/data/biglink", Hardlink: true, Linkname: "srv/data/big"},
		testimage.Whiteout("srv/data", "a"),
		testimage.Symlink("srv/up", "../opt"),
	}
	l2 := []testimage.File{
		testimage.Dir("opt", 0o711), testimage.Opaque("opt"), testimage.Reg("opt/fresh", 0o644, "fresh\n"),
		{Path: "srv/deep/er/file", Mode: 0o644, Data: []byte("deep\n"), Uid: 7},
	}
	img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{
		{Files: l0}, {Files: l1, Compression: "zstd"}, {Files: l2, Compression: "none"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// listTree describes every entry under dir: type and mode, owner, size,
// content hash or link target, and the overlay xattrs.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		desc := fmt.Sprintf("%s %o %d:%d", rel, st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += fmt.Sprintf(" %d %s links=%d", len(b), hex.EncodeToString(sum[:8]), st.Nlink)
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			desc += " -> " + l
		case unix.S_IFCHR:
			desc += fmt.Sprintf(" dev=%d", st.Rdev)
		}
		buf := make([]byte, 16)
		if n, err := unix.Lgetxattr(p, "trusted.overlay.opaque", buf); err == nil {
			desc += " opaque=" + string(buf[:n])
		}
		out = append(out, desc)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// snapshotTrees lists each committed snapshot's own directory, by key.
func snapshotTrees(t *testing.T, c *cli) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range snapshotList(t, c) {
		if s.Kind == "committed" {
			out[s.Key] = listTree(t, filepath.Join(c.Root, "snapshots", s.ID, "fs"))
		}
	}
	return out
}

// TestPullPipelinedMatchesSequential: pull unpacks layers while later ones
// download; the snapshots must be the same as unpacking after the fact
// (pull --no-unpack, then image mount unpacks layer after layer).
func TestPullPipelinedMatchesSequential(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := layeredImage(t)
	ref := pushTestImage(t, reg, "lab/layered", "1", img)

	piped := newRaceCLI(t)
	piped.OK(nil, "image", "pull", "--plain-http", ref)

	seq := newCLI(t)
	seq.OK(nil, "image", "pull", "--no-unpack", "--plain-http", ref)
	if n := len(snapshotList(t, seq)); n != 0 {
		t.Fatalf("pull --no-unpack made %d snapshots", n)
	}
	if _, err := os.Stat(filepath.Join(seq.Root, "blobs", "sha256", img.Layers[2].Digest.Encoded())); err != nil {
		t.Fatalf("pull --no-unpack did not keep the layers: %v", err)
	}
	seq.Fail(1, nil, []string{"image", "check", ref}, "3 problem")
	target := mkdirTarget(t)
	seq.OK(nil, "image", "mount", ref, target)
	merged := listTree(t, target)
	seq.OK(nil, "image", "unmount", target)

	a, b := snapshotTrees(t, piped), snapshotTrees(t, seq)
	if len(a) != 3 || len(b) != 3 {
		t.Fatalf("snapshots: pipelined %d, sequential %d, want 3", len(a), len(b))
	}
	for k, want := range b {
		if a[k] != want {
			t.Errorf("snapshot %s differs\npipelined:\n%s\nsequential:\n%s", k, a[k], want)
		}
	}
	piped.OK(nil, "image", "mount", ref, target)
	if got := listTree(t, target); got != merged {
		t.Errorf("merged trees differ\npipelined:\n%s\nsequential:\n%s", got, merged)
	}
	piped.OK(nil, "image", "unmount", target)
	for _, want := range []string{"srv 40750 1000:1000", "srv/data/new", "srv/data/biglink", "opt/fresh", "srv/deep/er/file 100644 7:0"} {
		if !strings.Contains(merged, want) {
			t.Errorf("merged tree lacks %q:\n%s", want, merged)
		}
	}
	if strings.Contains(merged, "opt/old") || strings.Contains(merged, "srv/data/a ") {
		t.Errorf("merged tree shows deleted files:\n%s", merged)
	}
	piped.OK(nil, "image", "check", "--verify-diffs", ref)

	// A download that breaks off and has to start over (the registry
	// ignores Range) stops the layer's stream; the layer is then unpacked
	// from its blob, with the same result.
	broken := newCLI(t)
	r := broken.Run(nil, "--log-level", "debug", "image", "pull", "-q", "--plain-http", cuttingProxy(t, reg, img.Layers[0].Digest)+"/lab/layered:1")
	if r.Code != 0 || !strings.Contains(r.Stderr, "unpacking from the blob") {
		t.Fatalf("pull through a cutting proxy: exit %d, fallback to the blob not logged\n%s", r.Code, r.Stderr)
	}
	for k, want := range b {
		if got := snapshotTrees(t, broken)[k]; got != want {
			t.Errorf("snapshot %s after a restarted download differs\ngot:\n%s\nwant:\n%s", k, got, want)
		}
	}
}

// cuttingProxy serves reg, except that the first GET of blob d breaks off
// after a third of it, and Range requests are answered from the start.
func cuttingProxy(t *testing.T, reg *testenv.Registry, d digest.Digest) string {
	t.Helper()
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) && r.Method == http.MethodGet {
			cut := false
			once.Do(func() { cut = true })
			if cut {
				resp, err := http.Get(reg.URL + r.URL.RequestURI())
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				w.Header().Set("Content-Length", fmt.Sprint(len(b)))
				w.WriteHeader(http.StatusOK)
				w.Write(b[:len(b)/3])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			}
			r.Header.Del("Range")
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, reg.URL+r.URL.RequestURI(), r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// withDiffID returns img with its config's diff ID i replaced.
func withDiffID(t *testing.T, img *testimage.Image, i int, d digest.Digest) *testimage.Image {
	t.Helper()
	var cfg ocispec.Image
	if err := json.Unmarshal(img.ConfigBytes(), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.RootFS.DiffIDs[i] = d
	cb, _ := json.Marshal(cfg)
	var m ocispec.Manifest
	if err := json.Unmarshal(img.ManifestBytes(), &m); err != nil {
		t.Fatal(err)
	}
	m.Config.Digest, m.Config.Size = digest.FromBytes(cb), int64(len(cb))
	mb, _ := json.Marshal(m)
	out := &testimage.Image{Config: m.Config, Layers: img.Layers, Blobs: map[digest.Digest][]byte{}}
	for k, v := range img.Blobs {
		out.Blobs[k] = v
	}
	out.Blobs[m.Config.Digest], out.Blobs[digest.FromBytes(mb)] = cb, mb
	out.Manifest = ocispec.Descriptor{MediaType: img.Manifest.MediaType, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	out.DiffIDs = append([]digest.Digest(nil), cfg.RootFS.DiffIDs...)
	return out
}

func TestPullBadDiffIDLeavesNoSnapshot(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	good := layeredImage(t)
	wrong := digest.FromString("not this layer")
	for _, bad := range []int{0, 1} {
		t.Run(fmt.Sprint("layer", bad), func(t *testing.T) {
			img := withDiffID(t, good, bad, wrong)
			ref := pushTestImage(t, reg, "lab/bad", fmt.Sprint(bad), img)
			c := newCLI(t)
			c.Fail(1, nil, []string{"image", "pull", "-q", "--plain-http", ref}, good.Layers[bad].Digest.String(), wrong.String())
			chains := chainIDs(img.DiffIDs)
			for _, s := range snapshotList(t, c) {
				if s.Kind != "committed" {
					t.Errorf("active snapshot %s left after a failed pull", s.Key)
				}
				for _, ch := range chains[bad:] {
					if s.Key == ch {
						t.Errorf("snapshot %s committed for a layer at or above the bad diff ID", ch)
					}
				}
			}
			if out := c.OK(nil, "image", "ls", "-q"); strings.TrimSpace(out) != "" {
				t.Errorf("failed pull recorded an image: %q", out)
			}
			dirs, _ := os.ReadDir(filepath.Join(c.Root, "snapshots"))
			if len(dirs) != bad {
				t.Errorf("%d snapshot directories left, want %d (the good layers below)", len(dirs), bad)
			}
		})
	}
}
