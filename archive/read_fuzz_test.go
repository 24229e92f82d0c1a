package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testimage"
)

// fuzzStager keeps staged blobs in memory, refusing wrong digests and
// short members as the store's stager does.
type fuzzStager struct{ blobs map[digest.Digest][]byte }

func (s *fuzzStager) Stage(ctx context.Context, member string, r io.Reader, size int64, expected digest.Digest) (digest.Digest, error) {
	b, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return "", err
	}
	if int64(len(b)) != size {
		return "", io.ErrUnexpectedEOF
	}
	d := digest.FromBytes(b)
	if expected != "" && d != expected {
		return "", errdefs.ErrDigestMismatch
	}
	s.blobs[d] = b
	return d, nil
}

func fuzzTarOf(f *testing.F, files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		io.WriteString(tw, body)
	}
	if err := tw.Close(); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzReadResolve feeds arbitrary bytes to image archive import (Read,
// then Resolve): no panic, and a plan it accepts only names blobs that were
// staged or that it generated itself.
func FuzzReadResolve(f *testing.F) {
	img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{{Files: []testimage.File{testimage.Reg("a", 0o644, "a")}}}})
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	if err := testimage.WriteLayout(dir, "lab/x:1", img.Manifest, img.Blobs); err != nil {
		f.Fatal(err)
	}
	var layout bytes.Buffer
	if err := TarDir(context.Background(), dir, &layout); err != nil {
		f.Fatal(err)
	}
	// The real layout resolves, so that the target is not vacuous.
	c, err := Read(context.Background(), bytes.NewReader(layout.Bytes()), &fuzzStager{blobs: map[digest.Digest][]byte{}})
	if err != nil {
		f.Fatal(err)
	}
	if plan, err := c.Resolve(); err != nil || len(plan.Images) != 1 {
		f.Fatalf("resolve a real layout: %v", err)
	}
	f.Add(layout.Bytes())
	f.Add(layout.Bytes()[:layout.Len()/2])
	cfg := string(img.Blobs[img.Config.Digest])
	layer := string(img.Blobs[img.Layers[0].Digest])
	f.Add(fuzzTarOf(f, map[string]string{
		"manifest.json": `[{"Config":"config.json","RepoTags":["lab/x:1"],"Layers":["l/layer.tar"]}]`,
		"config.json":   cfg, "l/layer.tar": layer, "repositories": `{"lab/x":{"1":"l"}}`,
	}))
	f.Add(fuzzTarOf(f, map[string]string{"manifest.json": `[{"Config":"../../etc/passwd","Layers":["/etc/shadow"]}]`}))
	f.Add(fuzzTarOf(f, map[string]string{"oci-layout": `{"imageLayoutVersion":"1.0.0"}`, "index.json": `{"schemaVersion":2,"manifests":[{"digest":"sha256:` + strings.Repeat("0", 64) + `","size":1}]}`}))
	f.Add(fuzzTarOf(f, map[string]string{"index.json": `{"manifests":[{"digest":"sha256:zz"}]}`}))
	f.Add(fuzzTarOf(f, map[string]string{"blobs/sha256/" + strings.Repeat("a", 64): "wrong"}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		st := &fuzzStager{blobs: map[digest.Digest][]byte{}}
		c, err := Read(context.Background(), bytes.NewReader(data), st)
		if err != nil {
			return
		}
		plan, err := c.Resolve()
		if err != nil {
			return
		}
		for d := range plan.Blobs {
			if _, staged := st.blobs[d]; !staged {
				if _, made := plan.Generated[d]; !made {
					t.Fatalf("plan names %s, which was neither staged nor generated", d)
				}
			}
		}
		for _, im := range plan.Images {
			if _, ok := plan.Blobs[im.Target.Digest]; !ok {
				t.Fatalf("image %v targets %s, which is not in the plan", im.Names, im.Target.Digest)
			}
		}
	})
}
