package layers

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// writeLayout writes an OCI image layout at dir with one image, tagged tag,
// made of the given gzip layers.
func writeLayout(t *testing.T, dir, tag string, tars [][]byte) {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(mt string, b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cfg := ocispec.Image{Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"}, RootFS: ocispec.RootFS{Type: "layers"}}
	var layers []ocispec.Descriptor
	for _, tb := range tars {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.FromBytes(tb))
		layers = append(layers, put(ocispec.MediaTypeImageLayerGzip, gz(t, tb)))
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    put(ocispec.MediaTypeImageConfig, mustJSON(cfg)),
		Layers:    layers,
	}
	md := put(ocispec.MediaTypeImageManifest, mustJSON(m))
	md.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(idx), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestUmociAgrees unpacks one image with umoci and with Apply plus a
// kernel overlay mount, and compares the two trees.
func TestUmociAgrees(t *testing.T) {
	requireRoot(t)
	requireCmd(t, "umoci")
	stack := [][]tent{{
		tDir("bin", 0o755), tFile("bin/sh", 0o755, "shell"), tFile("bin/su", 0o4755, "su"), tHard("bin/sh2", "bin/sh"),
		tDir("etc", 0o755), tFile("etc/passwd", 0o644, "root:x:0:0"), tDir("etc/conf.d", 0o755),
		tFile("etc/conf.d/a", 0o644, "a"), tFile("etc/conf.d/b", 0o644, "b"),
		tDir("usr", 0o755), tDir("usr/lib", 0o755), tFile("usr/lib/libx.so", 0o755, "libx"), tSym("lib", "usr/lib"),
		tDir("tmp", 0o1777), tDir("home", 0o755), tDir("home/u", 0o700).own(1000, 1000), tFile("home/u/old", 0o600, "old").own(1000, 1000),
		tFifo("run.fifo"), tChar("null", 1, 3),
	}, {
		tWh("etc/conf.d/a"), tFile("etc/conf.d/c", 0o644, "c"),
		tOpq("usr/lib"), tFile("usr/lib/liby.so", 0o755, "liby"),
		tFile("bin/wall", 0o2755, "wall").own(0, 5), tSym("bin/dangling", "/no/such/file"), tSym("bin/abs", "/bin/sh"),
		tWh("home/u"), tDir("home/u", 0o750).own(1000, 1000), tFile("home/u/new", 0o600, "new").own(1000, 1000),
		tFile("tmp/scratch", 0o666, "s"), tFile("lib/via-link.so", 0o755, "via"),
	}, {
		tFile("etc/passwd", 0o644, "root:x:0:0\nu:x:1000:1000"), tWh("bin/sh2"), tHard("bin/sh3", "bin/sh"),
		tFile("bin", 0o644, "not yet").mtime(t0), tDir("bin", 0o755), tFile("bin/sh4", 0o755, "shell4"), tHard("bin/sh5", "bin/sh4"),
		tHard("usr/lib/liby-link.so", "usr/lib/liby.so"),
		tFile("bin/ping", 0o755, "ping").x("security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00").x("user.mark", "m"),
	}}
	var tars [][]byte
	for _, ents := range stack {
		tars = append(tars, mkTar(t, ents...))
	}
	// Ours.
	dirs := applyStack(t, stack)
	mnt := mountStack(t, dirs)
	ours := listTree(t, mnt, listOpts{})

	// umoci's.
	layout, bundle := filepath.Join(t.TempDir(), "oci"), filepath.Join(t.TempDir(), "bundle")
	writeLayout(t, layout, "v1", tars)
	if out, err := exec.Command("umoci", "unpack", "--image", layout+":v1", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	theirs := listTree(t, filepath.Join(bundle, "rootfs"), listOpts{})
	diffListing(t, "overlay vs umoci rootfs", ours, theirs)
}
