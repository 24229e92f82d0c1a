package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// countingFront is a reverse proxy in front of a registry that counts
// cross-repository mounts and blob uploads.
type countingFront struct {
	mu       sync.Mutex
	mounts   int
	uploads  int
	blobGets map[digest.Digest]int
	srv      *httptest.Server
}

func newCountingFront(t *testing.T, reg *testenv.Registry) *countingFront {
	target, _ := url.Parse(reg.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	c := &countingFront{blobGets: map[digest.Digest]int{}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		if r.Method == http.MethodPost && r.URL.Query().Get("mount") != "" {
			c.mounts++
		}
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") {
			c.uploads++
		}
		if i := strings.Index(r.URL.Path, "/blobs/sha256:"); r.Method == http.MethodGet && i >= 0 {
			c.blobGets[digest.Digest(r.URL.Path[i+len("/blobs/"):])]++
		}
		c.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *countingFront) host() string { return strings.TrimPrefix(c.srv.URL, "http://") }

func (c *countingFront) gets(d digest.Digest) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blobGets[d]
}

func (c *countingFront) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mounts, c.uploads
}

func TestPushRoundTripWithMount(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	front := newCountingFront(t, reg)
	img := buildImage(t, "push", 3, linuxAMD64, false)
	pushImage(t, reg, "src/app", "1", img)

	ctx := context.Background()
	ts := newTestStore(t)
	f := ts.op(t, Options{PlainHTTP: true})
	pulled, err := f.Pull(ctx, front.host()+"/src/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Push(ctx, pulled.Name, front.host()+"/dst/app:2"); err != nil {
		t.Fatal(err)
	}
	mounts, uploads := front.counts()
	if mounts != 4 || uploads != 0 {
		t.Fatalf("push to the same registry should mount config and 3 layers: %d mounts, %d uploads", mounts, uploads)
	}
	_, desc, err := f.Resolver(t).Resolve(ctx, reg.Ref("dst/app", "2"))
	if err != nil || desc.Digest != img.Manifest.Digest {
		t.Fatalf("pushed digest %s, want %s (%v)", desc.Digest, img.Manifest.Digest, err)
	}

	// To another registry everything is uploaded, and the digest is kept.
	other := testenv.StartRegistry(t, testenv.RegistryOptions{})
	if err := f.Push(ctx, pulled.Name, other.Ref("copy/app", "3")); err != nil {
		t.Fatal(err)
	}
	have := registryBlobs(t, other.StorageDir)
	for d := range img.Blobs {
		if !have[d] {
			t.Fatalf("other registry lacks %s", d)
		}
	}
	ts2 := newTestStore(t)
	got, err := ts2.op(t, Options{PlainHTTP: true}).Pull(ctx, other.Ref("copy/app", "3"))
	if err != nil || got.Target.Digest != img.Manifest.Digest {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// A second push finds everything there.
	rec := newRecorder()
	f2 := ts.op(t, Options{PlainHTTP: true, Progress: rec})
	if err := f2.Push(ctx, pulled.Name, other.Ref("copy/app", "3")); err != nil {
		t.Fatal(err)
	}
	for _, l := range img.Layers {
		if !rec.existed[l.Digest] {
			t.Errorf("layer %s uploaded again", l.Digest)
		}
	}
}

func TestPushIndex(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	a := buildImage(t, "ia", 1, linuxAMD64, false)
	b := buildImage(t, "ib", 1, ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, false)
	idx, err := testimage.BuildIndex([]*testimage.Image{a, b}, false)
	if err != nil {
		t.Fatal(err)
	}
	pushBlobs(t, reg, "idx/app", "1", idx.Blobs, idx.Desc, a.Manifest, b.Manifest)
	ctx := context.Background()
	start := time.Now().UTC()
	ts := newTestStore(t)
	f := ts.op(t, Options{PlainHTTP: true, Platform: "linux/amd64"})
	pulled, err := f.Pull(ctx, reg.Ref("idx/app", "1"))
	if err != nil {
		t.Fatal(err)
	}
	// A push for one platform sends that platform's manifest as the tag,
	// leaves the index out and reads nothing of the other platforms.
	one := testenv.StartRegistry(t, testenv.RegistryOptions{})
	if err := f.Push(ctx, pulled.Name, one.Ref("idx/amd64", "1")); err != nil {
		t.Fatal(err)
	}
	have := registryBlobs(t, one.StorageDir)
	if !have[a.Manifest.Digest] || have[idx.Desc.Digest] || have[b.Manifest.Digest] {
		t.Fatalf("platform push: amd64 manifest %v, index %v, arm64 manifest %v; want only amd64's",
			have[a.Manifest.Digest], have[idx.Desc.Digest], have[b.Manifest.Digest])
	}
	for _, l := range b.Layers {
		if have[l.Digest] || ts.has(t, l.Digest) {
			t.Fatalf("platform push touched the arm64 layer %s", l.Digest)
		}
	}
	if err := ts.op(t, Options{PlainHTTP: true, Platform: "windows/amd64"}).Push(ctx, pulled.Name, one.Ref("idx/win", "1")); !errors.Is(err, errdefs.ErrNotFound) ||
		!strings.Contains(err.Error(), "it has linux/amd64, linux/arm64/v8") {
		t.Fatalf("push of a platform the index lacks: %v", err)
	}

	// Only amd64 is local; pushing the index to another registry fetches
	// the arm64 manifest and blobs from where the index came from.
	other := testenv.StartRegistry(t, testenv.RegistryOptions{})
	f = ts.op(t, Options{PlainHTTP: true})
	if err := f.Push(ctx, pulled.Name, other.Ref("idx/copy", "1")); err != nil {
		t.Fatal(err)
	}
	have = registryBlobs(t, other.StorageDir)
	for d := range idx.Blobs {
		if !have[d] {
			t.Fatalf("other registry lacks %s", d)
		}
	}
	// Every blob, whether the pull or the push fetched it, has a record
	// with sane times and the repository it came from.
	end := time.Now().UTC()
	for d := range idx.Blobs {
		rec, err := ts.rec.blob(d)
		if err != nil {
			t.Fatalf("record of %s: %v", d, err)
		}
		if rec.Created.Before(start) || rec.Created.After(end) || rec.Updated.Before(rec.Created) || rec.Updated.After(end) {
			t.Errorf("blob %s: recorded %v, updated %v; want both within the test (%v to %v)", d, rec.Created, rec.Updated, start, end)
		}
		if want := []Source{{Host: reg.Host, Repo: "idx/app"}}; !slices.Equal(rec.Sources, want) {
			t.Errorf("blob %s: sources %v, want %v", d, rec.Sources, want)
		}
	}
}

// writeOCILayout writes blobs and an index.json naming root with tag.
func writeOCILayout(t *testing.T, dir string, blobs map[digest.Digest][]byte, root ocispec.Descriptor, tag string) {
	t.Helper()
	for d, b := range blobs {
		p := filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	root.Platform = nil
	ix := ocispec.Index{Manifests: []ocispec.Descriptor{root}}
	ix.SchemaVersion = 2
	ix.MediaType = ocispec.MediaTypeImageIndex
	b, _ := json.Marshal(ix)
	os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

func skopeo(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("skopeo", append([]string{"--insecure-policy"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestSkopeoInterop(t *testing.T) {
	testenv.Require(t, "skopeo")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "skopeo", 2, linuxAMD64, false)
	layout := t.TempDir()
	writeOCILayout(t, layout, img.Blobs, img.Manifest, "v1")
	ctx := context.Background()

	// skopeo pushes, we pull.
	skopeo(t, "copy", "--dest-tls-verify=false", "oci:"+layout+":v1", "docker://"+reg.Ref("sk/in", "v1"))
	ts := newTestStore(t)
	f := ts.op(t, Options{PlainHTTP: true})
	got, err := f.Pull(ctx, reg.Ref("sk/in", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Target.Digest != img.Manifest.Digest {
		t.Fatalf("pulled %s, skopeo pushed %s", got.Target.Digest, img.Manifest.Digest)
	}

	// We push, skopeo pulls.
	if err := f.Push(ctx, got.Name, reg.Ref("sk/out", "v2")); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+reg.Ref("sk/out", "v2"), "oci:"+out+":v2")
	b, err := os.ReadFile(filepath.Join(out, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ix ocispec.Index
	if err := json.Unmarshal(b, &ix); err != nil || len(ix.Manifests) != 1 || ix.Manifests[0].Digest != img.Manifest.Digest {
		t.Fatalf("skopeo copied %s, want digest %s", b, img.Manifest.Digest)
	}
	for _, l := range img.Layers {
		if _, err := os.Stat(filepath.Join(out, "blobs", "sha256", l.Digest.Encoded())); err != nil {
			t.Fatalf("skopeo did not get layer %s: %v", l.Digest, err)
		}
	}
}
