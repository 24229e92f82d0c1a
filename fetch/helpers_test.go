package fetch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

type testStore struct {
	root  string
	store *cas.Store
	db    *index.DB
}

func newTestStore(t *testing.T) *testStore {
	t.Helper()
	root := t.TempDir()
	s, err := cas.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	db, err := index.Open(filepath.Join(root, "meta"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &testStore{root: root, store: s, db: db}
}

func (ts *testStore) fetcher(t *testing.T, opts Options) *Fetcher {
	t.Helper()
	if opts.HostsDir == "" {
		opts.HostsDir = t.TempDir()
	}
	f, err := New(ts.store, ts.db, opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
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
}

func newRecorder() *recorder {
	return &recorder{existed: map[digest.Digest]bool{}, done: map[digest.Digest]error{}}
}

func (r *recorder) Start(ocispec.Descriptor)         {}
func (r *recorder) Update(ocispec.Descriptor, int64) {}
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

// Pull is PullContent plus the image record the store would write: the
// tests of this package check both. It does not unpack layers.
func (f *Fetcher) Pull(ctx context.Context, ref string) (index.Image, error) {
	res, err := f.PullContent(ctx, ref)
	if err != nil {
		return index.Image{}, err
	}
	return f.recordImage(ctx, res.Name, res.Target)
}

func (f *Fetcher) recordImage(ctx context.Context, name string, target ocispec.Descriptor) (index.Image, error) {
	now := time.Now().UTC()
	img := index.Image{Name: name, Target: target, CreatedAt: now, UpdatedAt: now}
	if old, err := f.db.Images().Get(ctx, name); err == nil {
		img.CreatedAt, img.Labels = old.CreatedAt, old.Labels
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return index.Image{}, fmt.Errorf("image %s: %w", name, err)
	}
	if err := f.db.Images().Put(ctx, name, img); err != nil {
		return index.Image{}, fmt.Errorf("record image %s: %w", name, err)
	}
	return img, nil
}
