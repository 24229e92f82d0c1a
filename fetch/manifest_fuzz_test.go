package fetch

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testimage"
	"github.com/casfs/casfs/oci"
)

// fuzzMediaTypes are the descriptor media types a parent may announce for
// the fuzzed document ("" lets walk sniff it).
var fuzzMediaTypes = []string{
	"", ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
	oci.MediaTypeDockerManifest, oci.MediaTypeDockerManifestList,
	oci.MediaTypeDockerSchema1, "application/json",
}

// FuzzManifestWalk feeds arbitrary bytes to the code that reads a fetched
// manifest or index (media type sniffing and checks, JSON decoding,
// descriptor validation, platform selection, descent into children). The
// document sits in the local store, as after a download; children are
// found locally (one real image) or asked of a registry stand-in that
// knows nothing. It must never panic, and what it accepts must be usable.
func FuzzManifestWalk(f *testing.F) {
	ctx := context.Background()
	root := fuzzTempDir(f)
	store, err := cas.Open(root)
	if err != nil {
		f.Fatal(err)
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	f.Cleanup(srv.Close)
	fe, err := New(store, newMemRecords()).op(Options{HostsDir: f.TempDir(), PlainHTTP: true})
	if err != nil {
		f.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	src, err := fe.source(host, "fuzz/x")
	if err != nil {
		f.Fatal(err)
	}
	put := func(data []byte) digest.Digest {
		d := digest.FromBytes(data)
		w, err := store.Writer(ctx, "fuzz-"+d.String(), cas.WriterOpts{Expected: d, Total: int64(len(data))})
		if errors.Is(err, errdefs.ErrExists) {
			return d
		}
		if err != nil {
			f.Fatal(err)
		}
		defer w.Close()
		if err := cas.Copy(ctx, w, bytes.NewReader(data), int64(len(data)), d); err != nil && !errors.Is(err, errdefs.ErrExists) {
			f.Fatal(err)
		}
		return d
	}
	img, err := testimage.Build(testimage.ImageSpec{
		Layers:   []testimage.Layer{{Files: []testimage.File{testimage.Reg("a", 0o644, "a")}}},
		Platform: ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH},
	})
	if err != nil {
		f.Fatal(err)
	}
	put(img.Blobs[img.Manifest.Digest])
	idx, err := testimage.BuildIndex([]*testimage.Image{img}, false)
	if err != nil {
		f.Fatal(err)
	}

	// walk dispatches a pull's handlers over the documents under root (the
	// blobs they name are not fetched) and reads back what it reached.
	walk := func(root ocispec.Descriptor) (PullResult, error) {
		p := &Pull{Target: root, o: fe, src: src}
		docs := Platforms(oci.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			if !isDocument(d) {
				return nil, nil
			}
			return p.Fetch(ctx, d)
		}), fe.platform, fe.opts.AllPlatforms)
		if err := Dispatch(ctx, 1, docs, root); err != nil {
			return PullResult{}, err
		}
		return p.Result(ctx)
	}
	// The real image walks, so that the target is not vacuous.
	put(idx.Blobs[idx.Desc.Digest])
	if res, err := walk(ocispec.Descriptor{Digest: idx.Desc.Digest, Size: idx.Desc.Size}); err != nil || len(res.Manifests) != 1 {
		f.Fatalf("walk of a real index: %v, %d manifests", err, len(res.Manifests))
	}

	f.Add(img.Blobs[img.Manifest.Digest], uint8(0), false)
	f.Add(img.Blobs[img.Manifest.Digest], uint8(1), false)
	f.Add(idx.Blobs[idx.Desc.Digest], uint8(0), false)
	f.Add(idx.Blobs[idx.Desc.Digest], uint8(2), true)
	self := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:` + strings.Repeat("0", 64) + `","size":2}]}`
	for _, s := range []string{
		`{}`, `[]`, `null`, `{"schemaVersion":2}`, `{"schemaVersion":1,"fsLayers":[]}`,
		`{"schemaVersion":2,"config":{"digest":"sha256:zz","size":-1},"layers":[]}`,
		`{"schemaVersion":2,"config":{"digest":"sha256:` + strings.Repeat("a", 64) + `","size":1},"layers":[{"digest":"md5:x","size":3}]}`,
		`{"schemaVersion":2,"manifests":[]}`,
		`{"schemaVersion":2,"manifests":[{"digest":"nope","size":1,"platform":{"os":"linux","architecture":"` + runtime.GOARCH + `"}}]}`,
		`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("b", 64) + `","size":99999999999,"platform":{"os":"linux","architecture":"` + runtime.GOARCH + `"}}]}`,
		self, `{"mediaType":"application/vnd.example+json"}`, `{"schemaVersion":2,"config":`, "\xff\xfe",
	} {
		f.Add([]byte(s), uint8(0), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, mt uint8, all bool) {
		fe.opts.AllPlatforms = all
		desc := ocispec.Descriptor{MediaType: fuzzMediaTypes[int(mt)%len(fuzzMediaTypes)], Digest: put(data), Size: int64(len(data))}
		res, err := walk(desc)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if len(res.Manifests) == 0 || len(res.Manifests) != len(res.ManifestDescs) {
			t.Fatalf("walk accepted %q with %d manifests and %d descriptors", data, len(res.Manifests), len(res.ManifestDescs))
		}
		for i, m := range res.Manifests {
			if !oci.IsManifest(res.ManifestDescs[i].MediaType) {
				t.Fatalf("walk accepted %q as manifest type %q", data, res.ManifestDescs[i].MediaType)
			}
			for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
				if d.Digest.Validate() != nil || d.Size < 0 {
					t.Fatalf("walk accepted a bad descriptor %q size %d", d.Digest, d.Size)
				}
			}
		}
	})
}

// fuzzTempDir is a temporary folder on tmpfs when the machine has one:
// the store fsyncs every commit, which on a busy disk starves the fuzzer.
func fuzzTempDir(f *testing.F) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "casfs-fuzz-"); err == nil {
			f.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return f.TempDir()
}
