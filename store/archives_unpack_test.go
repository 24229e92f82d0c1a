package store

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
	"github.com/casfs/casfs/layers"
)

// layoutTar writes img as an OCI layout tar with its blobs in the given
// order, then index.json (naming it by the tag "1") and oci-layout.
func layoutTar(t *testing.T, img *testimage.Image, order []digest.Digest) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range order {
		add("blobs/sha256/"+d.Encoded(), img.Blobs[d])
	}
	md := img.Manifest
	md.Annotations = map[string]string{ocispec.AnnotationRefName: "1"}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}})
	add("index.json", idx)
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// An archive whose manifest and config come before its layers is unpacked
// while it is read, one whose layers come first from what it staged as
// soon as its image is known: either way every snapshot is made before the
// import records any blob (which it does once the archive is read), and
// whole.
func TestImportUnpacksWhileReading(t *testing.T) {
	testenv.RequireRoot(t)
	img := gcImage(t, "", "a", "b", "c")
	keys := chainKeys(img)
	docsFirst := []digest.Digest{img.Manifest.Digest, img.Config.Digest}
	for _, l := range img.Layers {
		docsFirst = append(docsFirst, l.Digest)
	}
	layersFirst := append(append([]digest.Digest{}, docsFirst[2:]...), img.Manifest.Digest, img.Config.Digest)
	for name, order := range map[string][]digest.Digest{"docs first": docsFirst, "layers first": layersFirst} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openTemp(t)
			got, err := s.ImportImages(ctx, bytes.NewReader(layoutTar(t, img, order)), ImportOptions{BaseName: "example.com/stream"})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Name != "example.com/stream:1" {
				t.Fatalf("imported %+v", got)
			}
			db, _ := s.Index()
			var firstRecord time.Time
			for _, d := range order {
				b, err := db.Blobs().Get(ctx, d.String())
				if err != nil {
					t.Fatalf("blob %s: %v", d, err)
				}
				if firstRecord.IsZero() || b.CreatedAt.Before(firstRecord) {
					firstRecord = b.CreatedAt
				}
			}
			sn, _ := s.Snapshotter()
			for i, k := range keys {
				rec, err := sn.Stat(ctx, k)
				if err != nil {
					t.Fatalf("snapshot %d: %v", i, err)
				}
				if !rec.UpdatedAt.Before(firstRecord) {
					t.Errorf("snapshot %d committed at %v, after the first blob record (%v): not while reading", i, rec.UpdatedAt, firstRecord)
				}
				name := []string{"a", "b", "c"}[i]
				b, err := os.ReadFile(filepath.Join(s.Root(), "snapshots", rec.ID, "fs", name))
				if err != nil || string(b) != "content of "+name+"\n" {
					t.Errorf("snapshot %d file %s: %q, %v", i, name, b, err)
				}
				if rec.Labels[layers.LabelDiffID] != img.DiffIDs[i].String() {
					t.Errorf("snapshot %d diff id label %v", i, rec.Labels)
				}
			}
			rep, err := s.Check(ctx, StoreCheckOptions{})
			if err != nil || len(rep.Problems) != 0 {
				t.Errorf("check: %+v, %v", rep.Problems, err)
			}
		})
	}
}

// A layer member that lies about its digest refuses the archive whole,
// even when its bytes unpacked fine while it was read: here the member
// holds the same tar compressed otherwise, so its diff ID is right and its
// digest is not.
func TestImportStreamedLayerStillVerified(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	img := gcImage(t, "", "a")
	l := img.Layers[0].Digest
	zr, err := gzip.NewReader(bytes.NewReader(img.Blobs[l]))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var other bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&other, gzip.BestSpeed)
	zw.Name = "other"
	zw.Write(raw)
	zw.Close()
	bad := *img
	bad.Blobs = maps.Clone(img.Blobs)
	bad.Blobs[l] = other.Bytes()
	s := openTemp(t)
	_, err = s.ImportImages(ctx, bytes.NewReader(layoutTar(t, &bad, []digest.Digest{img.Manifest.Digest, img.Config.Digest, l})), ImportOptions{BaseName: "example.com/bad"})
	if !errors.Is(err, errdefs.ErrDigestMismatch) || !strings.Contains(err.Error(), l.Encoded()) {
		t.Fatalf("import of a lying member: %v", err)
	}
	imgs, err := s.ListImages(ctx)
	if err != nil || len(imgs) != 0 {
		t.Fatalf("images after a refused import: %+v, %v", imgs, err)
	}
	if _, err := s.blobs.Info(ctx, l); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("layer blob after a refused import: %v", err)
	}
}
