package fusefs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/layers/merged"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// require fails the test when the machine lacks something it needs: make
// test installs every prerequisite, so nothing is skipped.
func require(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func requireFuse(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	require(t, "open /dev/fuse", err)
	f.Close()
	if os.Geteuid() != 0 {
		require(t, "fuse tests", fmt.Errorf("need root"))
	}
}

func requireCmd(t testing.TB, name string) {
	t.Helper()
	_, err := exec.LookPath(name)
	require(t, "command "+name, err)
}

// fakeSource is a Source backed by real files in a temp dir.
type fakeSource struct {
	dir string

	mu       sync.Mutex
	blobs    map[digest.Digest]int64
	images   []ImageInfo
	layers   map[string][]string // rootfs id -> layer dirs
	failOpen map[digest.Digest]error
	opens    map[digest.Digest]int
	// rootfsCalls counts Rootfs calls: trees the filesystem had built.
	rootfsCalls int
}

// fakeBlobTime is the time of every fake blob record.
var fakeBlobTime = time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC)

func newFakeSource(t testing.TB) *fakeSource {
	return &fakeSource{
		dir:      t.TempDir(),
		blobs:    map[digest.Digest]int64{},
		layers:   map[string][]string{},
		failOpen: map[digest.Digest]error{},
		opens:    map[digest.Digest]int{},
	}
}

func (s *fakeSource) addBlob(t testing.TB, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	if err := os.WriteFile(filepath.Join(s.dir, d.Encoded()), data, 0o444); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.blobs[d] = int64(len(data))
	s.mu.Unlock()
	return d
}

func (s *fakeSource) setFailOpen(d digest.Digest, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.failOpen, d)
	} else {
		s.failOpen[d] = err
	}
}

func (s *fakeSource) removeBlob(d digest.Digest) {
	s.mu.Lock()
	delete(s.blobs, d)
	s.mu.Unlock()
}

func (s *fakeSource) Blobs(ctx context.Context) ([]BlobInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []BlobInfo
	for d, n := range s.blobs {
		out = append(out, BlobInfo{Digest: d, Size: n, ModTime: fakeBlobTime})
	}
	return out, nil
}

func (s *fakeSource) BlobInfo(ctx context.Context, d digest.Digest) (BlobInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.blobs[d]
	if !ok {
		return BlobInfo{}, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return BlobInfo{Digest: d, Size: n, ModTime: fakeBlobTime}, nil
}

func (s *fakeSource) OpenBlob(ctx context.Context, d digest.Digest) (*os.File, error) {
	s.mu.Lock()
	_, ok := s.blobs[d]
	ferr := s.failOpen[d]
	s.opens[d]++
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	if ferr != nil {
		return nil, ferr
	}
	return os.Open(filepath.Join(s.dir, d.Encoded()))
}

func (s *fakeSource) Images(ctx context.Context) ([]ImageInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ImageInfo(nil), s.images...), nil
}

func (s *fakeSource) Rootfs(ctx context.Context, id string) (*merged.Tree, error) {
	s.mu.Lock()
	dirs, ok := s.layers[id]
	s.rootfsCalls++
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("rootfs %s: %w", id, errdefs.ErrNotFound)
	}
	return merged.Build(ctx, dirs)
}

// addImage records an image with real manifest/config blobs (and an index
// when multi is set) over the given layer blobs.
func (s *fakeSource) addImage(t testing.TB, name string, layerBlobs []digest.Digest, rootfsID string, multi bool) ImageInfo {
	t.Helper()
	cfg := s.addBlob(t, []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{"Env":["IMAGE=%s"]}}`, name)))
	var ls []ocispec.Descriptor
	for _, l := range layerBlobs {
		ls = append(ls, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: l, Size: s.blobs[l]})
	}
	mb, _ := json.Marshal(ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfg, Size: s.blobs[cfg]}, Layers: ls})
	man := s.addBlob(t, mb)
	target := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: man, Size: int64(len(mb))}
	if multi {
		ib, _ := json.Marshal(ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{target}})
		idx := s.addBlob(t, ib)
		target = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: idx, Size: int64(len(ib))}
	}
	img := ImageInfo{Name: name, Target: target, Manifest: man, Config: cfg, Layers: layerBlobs, RootfsID: rootfsID}
	s.mu.Lock()
	s.images = append(s.images, img)
	s.mu.Unlock()
	return img
}

func (s *fakeSource) removeImage(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, img := range s.images {
		if img.Name == name {
			s.images = append(s.images[:i], s.images[i+1:]...)
			return
		}
	}
}

// syncBuffer is a log sink tests can read while the daemon writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type mounted struct {
	dir string
	fs  *FS
	log *syncBuffer
}

// mount mounts src on a temp dir and unmounts it when the test ends,
// whether it passed or not.
func mount(t testing.TB, src Source) *mounted {
	t.Helper()
	return mountWith(t, src, nil)
}

// mountWith is mount with a hook that adjusts the filesystem first.
func mountWith(t testing.TB, src Source, adjust func(*FS)) *mounted {
	t.Helper()
	requireFuse(t)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fsys := New(src, Options{Logger: logger})
	if adjust != nil {
		adjust(fsys)
	}
	dir := t.TempDir()
	srv, err := Mount(context.Background(), dir, fsys, MountOptions{FsName: "/var/lib/casfs-test", AllowOther: true})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := Unmount(ctx, srv); err != nil {
			t.Errorf("unmount: %v", err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
		srv.Wait()
	})
	return &mounted{dir: dir, fs: fsys, log: logs}
}

func (m *mounted) p(rel string) string { return filepath.Join(m.dir, rel) }

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	requireCmd(t, name)
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// layer helpers: build overlay-encoded layer dirs by hand.

type layer struct {
	t   testing.TB
	dir string
}

func newLayer(t testing.TB, base, name string) layer {
	d := filepath.Join(base, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return layer{t, d}
}

func (l layer) p(n string) string { return filepath.Join(l.dir, n) }

func (l layer) parent(n string) {
	if err := os.MkdirAll(filepath.Dir(l.p(n)), 0o755); err != nil {
		l.t.Fatal(err)
	}
}

func (l layer) file(n string, data []byte, mode uint32) {
	l.t.Helper()
	l.parent(n)
	if err := os.WriteFile(l.p(n), data, 0o600); err != nil {
		l.t.Fatal(err)
	}
	if err := unix.Chmod(l.p(n), mode); err != nil {
		l.t.Fatal(err)
	}
}

func (l layer) mknod(n string, mode uint32, major, minor uint32) {
	l.t.Helper()
	l.parent(n)
	if err := unix.Mknod(l.p(n), mode, int(unix.Mkdev(major, minor))); err != nil {
		l.t.Fatal(err)
	}
	if err := unix.Chmod(l.p(n), mode&0o7777); err != nil { // umask
		l.t.Fatal(err)
	}
}

func (l layer) do(err error) {
	l.t.Helper()
	if err != nil {
		l.t.Fatal(err)
	}
}
