package store

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/faultproxy"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
	"github.com/casfs/casfs/lazy"
)

// A lazy pull stages each layer's TOC as soon as it is verified, while
// the other layers are still opening; when a later layer's TOC does not
// match the digest its manifest pins, the pull fails with that, records
// no image, and leaves neither the good layer's TOC nor a staging folder.
func TestLazyPullStagesTOCsAndDropsThemOnFailure(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := estargzImage(t, "good", "bad")
	// The manifest pins another TOC for the second layer.
	var m ocispec.Manifest
	if err := json.Unmarshal(img.Blobs[img.Manifest.Digest], &m); err != nil {
		t.Fatal(err)
	}
	goodTOC := digest.Digest(m.Layers[0].Annotations[lazy.TOCDigestAnnotation])
	if goodTOC == "" {
		t.Fatal("the eStargz layer has no TOC digest annotation")
	}
	m.Layers[1].Annotations[lazy.TOCDigestAnnotation] = digest.FromString("not this layer's TOC").String()
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	root := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	img.Blobs[root.Digest] = mb
	ctx := context.Background()
	if err := testimage.Push(ctx, reg.URL, "lab/badtoc", "1", img.Blobs, root, reg.Client()); err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.Start(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	bad := faultproxy.Blob(m.Layers[1].Digest)
	held := make(chan struct{})
	if err := proxy.Set(bad, faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodGet, OnHold: func() { close(held) }}); err != nil {
		t.Fatal(err)
	}

	s := openTemp(t)
	ro := RegistryOptions{PlainHTTP: true, HostsDir: t.TempDir()}
	w := pullInBackground(t, s, proxy.Host+"/lab/badtoc:1", PullOptions{RegistryOptions: ro, Lazy: true, NoComplete: true})
	w.until("the second layer was read", closed(held))
	staged := filepath.Join(s.root, "ingest", ".batch-*", goodTOC.Encoded())
	w.until("the first layer's TOC was staged while the second layer was held", func() bool {
		ms, _ := filepath.Glob(staged)
		return len(ms) == 1
	})
	proxy.Clear(bad)
	if err := w.end(); !errors.Is(err, errdefs.ErrDigestMismatch) || !strings.Contains(err.Error(), "manifest pins") {
		t.Fatalf("pull: %v, want the TOC digest mismatch", err)
	}
	if imgs, err := s.ListImages(ctx); err != nil || len(imgs) != 0 {
		t.Fatalf("images after the failed pull: %v, %v", imgs, err)
	}
	if _, err := s.ContentInfo(ctx, goodTOC); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the first layer's TOC after the failed pull: %v, want not found", err)
	}
	if _, err := os.Stat(filepath.Join(s.root, "blobs", "sha256", goodTOC.Encoded())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the first layer's TOC file after the failed pull: %v", err)
	}
	if ms, _ := filepath.Glob(filepath.Join(s.root, "ingest", ".batch-*")); len(ms) != 0 {
		t.Fatalf("staging folders left by the failed pull: %v", ms)
	}
}

// estargzImage builds an image of one eStargz layer per name, each with
// the file etc/<name>.
func estargzImage(t *testing.T, names ...string) *testimage.Image {
	t.Helper()
	spec := testimage.ImageSpec{}
	for _, name := range names {
		spec.Layers = append(spec.Layers, testimage.Layer{Compression: "estargz", Files: []testimage.File{
			testimage.Dir("etc", 0o755), testimage.Reg("etc/"+name, 0o644, "content of "+name+"\n"),
		}})
	}
	img, err := testimage.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
