package fetch

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testenv"
)

// TestFetchContentByDigest: REF@digest fetches a manifest's whole image, a
// small layer after the manifest endpoint refuses it, and a blob over the
// manifest size bound without asking the manifest endpoint at all (which
// would make docker-registry read the whole blob to answer).
func TestFetchContentByDigest(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "cd", 2, linuxAMD64, false)
	big := make([]byte, 96<<10)
	rand.Read(big)
	bigD := digest.FromBytes(big)
	blobs := map[digest.Digest][]byte{bigD: big}
	for d, b := range img.Blobs {
		blobs[d] = b
	}
	pushBlobs(t, reg, "cd", "1", blobs, img.Manifest)
	ctx := context.Background()
	opts := Options{PlainHTTP: true, MaxManifestSize: 64 << 10}
	repo := reg.Host + "/cd@"

	ts := newTestStore(t)
	desc, err := ts.op(t, opts).FetchContent(ctx, repo+bigD.String())
	if err != nil {
		t.Fatalf("fetch the large blob: %v", err)
	}
	if desc.Digest != bigD || desc.Size != int64(len(big)) {
		t.Fatalf("large blob: got %s (%d bytes), want %s (%d)", desc.Digest, desc.Size, bigD, len(big))
	}
	ts.requireBlob(t, big)
	if n := reg.RequestCount("", "/manifests/"+bigD.String()); n != 0 {
		t.Fatalf("the manifest endpoint was asked %d times for a blob over the manifest bound", n)
	}

	small := img.Layers[0].Digest
	if _, err := ts.op(t, opts).FetchContent(ctx, repo+small.String()); err != nil {
		t.Fatalf("fetch a small layer: %v", err)
	}
	ts.requireBlob(t, img.Blobs[small])
	if n := reg.RequestCount("", "/manifests/"+small.String()); n == 0 {
		t.Fatalf("a blob under the manifest bound was not first asked for as a manifest")
	}

	whole := newTestStore(t)
	desc, err = whole.op(t, opts).FetchContent(ctx, repo+img.Manifest.Digest.String())
	if err != nil {
		t.Fatalf("fetch the manifest by digest: %v", err)
	}
	if desc.Digest != img.Manifest.Digest || desc.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("manifest by digest: got %s %s", desc.MediaType, desc.Digest)
	}
	for d, b := range img.Blobs {
		if !whole.has(t, d) {
			t.Fatalf("fetch of the manifest left out %s", d)
		}
		whole.requireBlob(t, b)
	}

	_, err = ts.op(t, opts).FetchContent(ctx, repo+digest.FromString("nothing").String())
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unknown digest: want not found, got %v", err)
	}
}
