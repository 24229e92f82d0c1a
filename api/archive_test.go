package api

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/archive"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testimage"
	"github.com/casfs/casfs/store"
)

// archiveOf is an OCI layout tar of img whose index.json names it only by
// the tag "v1" (so that importing it needs a base name).
func archiveOf(t *testing.T, img *testimage.Image, dropLayer bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := archive.NewWriter(&buf)
	d := img.Manifest
	d.Annotations = map[string]string{archive.AnnotationRefName: "v1"}
	if err := w.WriteMetadata(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []ocispec.Descriptor{d}}, nil); err != nil {
		t.Fatal(err)
	}
	for dg, b := range img.Blobs {
		if dropLayer && dg == img.Layers[0].Digest {
			continue
		}
		if _, err := w.WriteBytes(b); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	return buf.Bytes()
}

// Import and export through the socket do what the embedded store does:
// same names, same archive bytes, same errors.
func TestArchivesOverSocket(t *testing.T) {
	img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{{Files: []testimage.File{testimage.Reg("a", 0o644, "a\n")}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	embedded := localBackend().open(t)
	remote := localBackend().open(t)
	ts := serve(t, remote)
	opts := store.ImportOptions{BaseName: "lab/x", Digests: true, NoUnpack: true}

	want, wantErr := embedded.ImportImages(ctx, bytes.NewReader(archiveOf(t, img, false)), opts)
	got, err := ts.client.ImportImages(ctx, bytes.NewReader(archiveOf(t, img, false)), opts)
	if err != nil || wantErr != nil {
		t.Fatalf("import: socket %v, embedded %v", err, wantErr)
	}
	names := func(infos []store.ImageInfo) string {
		b, _ := json.Marshal(infos)
		var out []struct{ Name, Target any }
		json.Unmarshal(b, &out)
		b, _ = json.Marshal(out)
		return string(b)
	}
	if names(got) != names(want) || len(got) != 2 || got[0].Name != "docker.io/lab/x:v1" || got[1].Name != "docker.io/lab/x@"+img.Manifest.Digest.String() {
		t.Fatalf("import names: socket %s, embedded %s", names(got), names(want))
	}

	var viaSocket, direct bytes.Buffer
	eopts := store.ExportOptions{SkipDockerManifest: true}
	if err := ts.client.ExportImages(ctx, &viaSocket, []string{"lab/x:v1"}, eopts); err != nil {
		t.Fatal(err)
	}
	if err := embedded.ExportImages(ctx, &direct, []string{"lab/x:v1"}, eopts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(viaSocket.Bytes(), direct.Bytes()) || viaSocket.Len() == 0 {
		t.Fatalf("export through the socket (%d bytes) differs from embedded (%d bytes)", viaSocket.Len(), direct.Len())
	}

	_, wantErr = embedded.ImportImages(ctx, bytes.NewReader(archiveOf(t, img, true)), opts)
	_, err = ts.client.ImportImages(ctx, bytes.NewReader(archiveOf(t, img, true)), opts)
	sameErr(t, "import with a missing layer", err, wantErr, errdefs.ErrNotFound)
	wantErr = embedded.ExportImages(ctx, &direct, []string{"lab/none:1"}, eopts)
	err = ts.client.ExportImages(ctx, &viaSocket, []string{"lab/none:1"}, eopts)
	sameErr(t, "export of an unknown image", err, wantErr, errdefs.ErrNotFound)
}
