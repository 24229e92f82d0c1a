package fetch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

type testStore struct {
	root    string
	store   *cas.Store
	rec     *memRecords
	fetcher *Fetcher
}

func newTestStore(t *testing.T) *testStore {
	t.Helper()
	root := t.TempDir()
	s, err := cas.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	rec := newMemRecords()
	return &testStore{root: root, store: s, rec: rec, fetcher: New(s, rec)}
}

// testFetcher is the store's one Fetcher with the options of one operation.
type testFetcher struct {
	ts   *testStore
	opts Options
}

func (ts *testStore) op(t *testing.T, opts Options) *testFetcher {
	t.Helper()
	if opts.HostsDir == "" {
		opts.HostsDir = t.TempDir()
	}
	return &testFetcher{ts: ts, opts: opts}
}

func (tf *testFetcher) PullContent(ctx context.Context, ref string) (PullResult, error) {
	return tf.ts.fetcher.pullContent(ctx, ref, tf.opts)
}

func (tf *testFetcher) FetchContent(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	return tf.ts.fetcher.FetchContent(ctx, ref, tf.opts)
}

func (tf *testFetcher) FetchBlob(ctx context.Context, d digest.Digest) error {
	return tf.ts.fetcher.FetchBlob(ctx, d, tf.opts)
}

func (tf *testFetcher) ReadBlobRange(ctx context.Context, d digest.Digest, off, n int64) ([]byte, error) {
	p := make([]byte, n)
	return p, tf.ts.fetcher.ReadBlobRange(ctx, d, off, p, tf.opts)
}

func (tf *testFetcher) Resolver(t *testing.T) *registryResolver {
	t.Helper()
	o, err := tf.ts.fetcher.op(tf.opts)
	if err != nil {
		t.Fatal(err)
	}
	return o.resolver
}

// testImage is the image record the store would write after a pull.
type testImage struct {
	Name   string
	Target ocispec.Descriptor
}

// Pull is PullContent plus the image record the store would write: the
// tests of this package check both. It does not unpack layers.
func (tf *testFetcher) Pull(ctx context.Context, ref string) (testImage, error) {
	res, err := tf.PullContent(ctx, ref)
	if err != nil {
		return testImage{}, err
	}
	img := testImage{Name: res.Name, Target: res.Target}
	tf.ts.rec.mu.Lock()
	tf.ts.rec.images[img.Name] = img
	tf.ts.rec.mu.Unlock()
	return img, nil
}

// Push pushes the image a Pull recorded under localName.
func (tf *testFetcher) Push(ctx context.Context, localName, remote string) error {
	img, err := tf.ts.rec.image(localName)
	if err != nil {
		return err
	}
	return tf.ts.fetcher.Push(ctx, localName, img.Target, remote, tf.opts)
}

// memRecords is the store's side of fetch, in memory: what a test checks.
type memRecords struct {
	mu     sync.Mutex
	blobs  map[digest.Digest]*memBlob
	images map[string]testImage
}

type memBlob struct {
	Known
	Created, Updated time.Time
}

func newMemRecords() *memRecords {
	return &memRecords{blobs: map[digest.Digest]*memBlob{}, images: map[string]testImage{}}
}

func (m *memRecords) Lease(context.Context, []digest.Digest) error { return nil }

func (m *memRecords) Record(_ context.Context, desc ocispec.Descriptor, src Source) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	b, ok := m.blobs[desc.Digest]
	if !ok {
		b = &memBlob{Known: Known{Desc: ocispec.Descriptor{Digest: desc.Digest, Size: desc.Size}}, Created: now}
		m.blobs[desc.Digest] = b
	}
	if b.Desc.MediaType == "" {
		b.Desc.MediaType = desc.MediaType
	}
	if !slices.Contains(b.Sources, src) {
		b.Sources = append(b.Sources, src)
	}
	b.Updated = now
	return nil
}

func (m *memRecords) Lookup(_ context.Context, d digest.Digest) (Known, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return Known{}, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return Known{Desc: b.Desc, Sources: slices.Clone(b.Sources)}, nil
}

// blob returns the record of d.
func (m *memRecords) blob(d digest.Digest) (memBlob, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return memBlob{}, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return *b, nil
}

func (m *memRecords) image(name string) (testImage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	img, ok := m.images[name]
	if !ok {
		return testImage{}, fmt.Errorf("image %s: %w", name, errdefs.ErrNotFound)
	}
	return img, nil
}

// requireBlob checks that the store holds want under its digest.
func (ts *testStore) requireBlob(t *testing.T, want []byte) {
	t.Helper()
	d := digest.FromBytes(want)
	ra, err := ts.store.ReaderAt(context.Background(), d)
	if err != nil {
		t.Fatalf("blob %s: %v", d, err)
	}
	defer ra.Close()
	got := make([]byte, ra.Size())
	if _, err := ra.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("blob %s: stored bytes differ", d)
	}
}

func (ts *testStore) has(t *testing.T, d digest.Digest) bool {
	t.Helper()
	_, err := ts.store.Info(context.Background(), d)
	return err == nil
}

// buildImage makes a small image with n layers whose content depends on seed.
func buildImage(t *testing.T, seed string, n int, plat ocispec.Platform, docker bool) *testimage.Image {
	t.Helper()
	var layers []testimage.Layer
	for i := range n {
		layers = append(layers, testimage.Layer{
			Files:           []testimage.File{testimage.Reg(fmt.Sprintf("f%d", i), 0o644, strings.Repeat(seed+fmt.Sprint(i), 100+i*7))},
			DockerMediaType: docker,
		})
	}
	img, err := testimage.Build(testimage.ImageSpec{Layers: layers, Platform: plat, Docker: docker})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// pushBlobs uploads blobs and tags root in repo on reg, with oras directly
// (not with the code under test).
func pushBlobs(t *testing.T, reg *testenv.Registry, repo, tag string, blobs map[digest.Digest][]byte, root ocispec.Descriptor, manifests ...ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	r := &remote.Repository{
		Reference: registry.Reference{Registry: reg.Host, Repository: repo},
		PlainHTTP: strings.HasPrefix(reg.URL, "http:"),
		Client: &auth.Client{Client: reg.Client(), Credential: auth.StaticCredential(reg.Host,
			auth.Credential{Username: reg.Username, Password: reg.Password}), BlockedRealmPrefixes: nil},
	}
	isManifest := map[digest.Digest]bool{root.Digest: true}
	for _, m := range manifests {
		isManifest[m.Digest] = true
	}
	for d, b := range blobs {
		if isManifest[d] {
			continue
		}
		if err := r.Blobs().Push(ctx, ocispec.Descriptor{Digest: d, Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
			t.Fatalf("push blob %s: %v", d, err)
		}
	}
	for _, m := range manifests {
		if err := r.Manifests().Push(ctx, m, bytes.NewReader(blobs[m.Digest])); err != nil {
			t.Fatalf("push manifest %s: %v", m.Digest, err)
		}
	}
	if err := r.PushReference(ctx, root, bytes.NewReader(blobs[root.Digest]), tag); err != nil {
		t.Fatalf("push %s:%s: %v", repo, tag, err)
	}
}

func pushImage(t *testing.T, reg *testenv.Registry, repo, tag string, img *testimage.Image) {
	t.Helper()
	pushBlobs(t, reg, repo, tag, img.Blobs, img.Manifest)
}

// recorder is a Progress that remembers what it heard.
type recorder struct {
	mu      sync.Mutex
	existed map[digest.Digest]bool
	done    map[digest.Digest]error
	last    map[digest.Digest]int64 // the last Update
}

func newRecorder() *recorder {
	return &recorder{existed: map[digest.Digest]bool{}, done: map[digest.Digest]error{}, last: map[digest.Digest]int64{}}
}

func (r *recorder) Start(ocispec.Descriptor) {}
func (r *recorder) Update(d ocispec.Descriptor, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last[d.Digest] = n
}
func (r *recorder) Done(d ocispec.Descriptor, err error, existed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done[d.Digest] = err
	r.existed[d.Digest] = existed
}

// registryBlobs lists the blob digests in a registry's filesystem storage.
func registryBlobs(t *testing.T, storage string) map[digest.Digest]bool {
	t.Helper()
	out := map[digest.Digest]bool{}
	root := filepath.Join(storage, "docker", "registry", "v2", "blobs", "sha256")
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "data" {
			out[digest.Digest("sha256:"+filepath.Base(filepath.Dir(p)))] = true
		}
		return nil
	})
	return out
}

func writeDockerConfig(t *testing.T, host, user, pass string) {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{"auths": map[string]any{host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}}}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
}
