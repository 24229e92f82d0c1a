package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/oci"
)

func threeLayers() ImageSpec {
	return ImageSpec{
		Layers: []Layer{
			{Compression: "gzip", Files: []File{
				Reg("etc/hostname", 0o644, "casfs\n"),
				Dir("etc", 0o755),
				Symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
			}},
			{Compression: "zstd", Files: []File{
				Dir("bin", 0o755),
				{Path: "bin/tool", Mode: 0o755 | os.ModeSetuid, Uid: 0, Gid: 0, Data: []byte("#!/bin/sh\necho hi\n")},
				{Path: "bin/tool2", Hardlink: true, Linkname: "bin/tool"},
			}},
			{Compression: "none", Files: []File{
				Whiteout("etc", "hostname"),
				{Path: "dev/null", Mode: os.ModeDevice | os.ModeCharDevice | 0o666, Devmajor: 1, Devminor: 3},
				{Path: "data", Mode: 0o600, Uid: 1000, Gid: 1000, Data: []byte("x"), Xattrs: map[string]string{"user.k": "v"}},
			}},
		},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/tool"}, Env: []string{"PATH=/bin"}},
	}
}

func readTar(t *testing.T, b []byte) []*tar.Header {
	t.Helper()
	var out []*tar.Header
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}

func TestBuildDeterministicAndConsistent(t *testing.T) {
	a, err := Build(threeLayers())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(threeLayers())
	if err != nil {
		t.Fatal(err)
	}
	if a.Manifest.Digest != b.Manifest.Digest {
		t.Fatalf("two builds differ: %s vs %s", a.Manifest.Digest, b.Manifest.Digest)
	}
	for d, blob := range a.Blobs {
		if digest.FromBytes(blob) != d {
			t.Errorf("blob %s has digest %s", d, digest.FromBytes(blob))
		}
	}
	if a.Manifest.MediaType != ocispec.MediaTypeImageManifest || a.Manifest.Platform.Architecture != "amd64" || a.Manifest.Platform.OS != "linux" {
		t.Errorf("manifest descriptor %+v", a.Manifest)
	}
	wantTypes := []string{ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd, ocispec.MediaTypeImageLayer}
	var raws [][]byte
	for i, l := range a.Layers {
		if l.MediaType != wantTypes[i] {
			t.Errorf("layer %d media type %s, want %s", i, l.MediaType, wantTypes[i])
		}
		blob := a.Blobs[l.Digest]
		var raw []byte
		switch i {
		case 0:
			zr, err := gzip.NewReader(bytes.NewReader(blob))
			if err != nil {
				t.Fatal(err)
			}
			raw, err = io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
		case 1:
			zr, err := zstd.NewReader(nil)
			if err != nil {
				t.Fatal(err)
			}
			raw, err = zr.DecodeAll(blob, nil)
			zr.Close()
			if err != nil {
				t.Fatal(err)
			}
		case 2:
			raw = blob
		}
		if digest.FromBytes(raw) != a.DiffIDs[i] {
			t.Errorf("layer %d diff id %s, uncompressed digest %s", i, a.DiffIDs[i], digest.FromBytes(raw))
		}
		raws = append(raws, raw)
	}

	var m ocispec.Manifest
	if err := json.Unmarshal(a.ManifestBytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m.Config.Digest != a.Config.Digest || len(m.Layers) != 3 || m.SchemaVersion != 2 {
		t.Fatalf("manifest %s", a.ManifestBytes())
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(a.ConfigBytes(), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 3 || cfg.RootFS.DiffIDs[2] != a.DiffIDs[2] || cfg.Config.Cmd[0] != "/bin/tool" || cfg.Architecture != "amd64" {
		t.Fatalf("config %s", a.ConfigBytes())
	}

	// Layer 0 entries are sorted; types and bits survive.
	h0 := readTar(t, raws[0])
	if len(h0) != 3 || h0[0].Name != "etc" || h0[1].Name != "etc/hostname" || h0[2].Typeflag != tar.TypeSymlink || h0[2].Linkname != "/usr/share/zoneinfo/UTC" {
		t.Errorf("layer 0 entries: %+v", h0)
	}
	if !h0[0].ModTime.Equal(defaultModTime) {
		t.Errorf("mtime %v, want %v", h0[0].ModTime, defaultModTime)
	}
	h1 := readTar(t, raws[1])
	if h1[1].Mode != 0o4755 || h1[2].Typeflag != tar.TypeLink || h1[2].Linkname != "bin/tool" {
		t.Errorf("layer 1 entries: %+v %+v", h1[1], h1[2])
	}
	h2 := readTar(t, raws[2])
	if h2[0].Name != "data" || h2[0].Uid != 1000 || h2[0].PAXRecords["SCHILY.xattr.user.k"] != "v" ||
		h2[1].Typeflag != tar.TypeChar || h2[1].Devmajor != 1 || h2[1].Devminor != 3 || h2[2].Name != "etc/.wh.hostname" {
		t.Errorf("layer 2 entries: %+v", h2)
	}
}

func TestBuildDocker(t *testing.T) {
	spec := threeLayers()
	spec.Docker = true
	img, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{oci.MediaTypeDockerLayerGzip, ocispec.MediaTypeImageLayerZstd, oci.MediaTypeDockerLayer}
	for i, l := range img.Layers {
		if l.MediaType != want[i] {
			t.Errorf("layer %d: %s, want %s", i, l.MediaType, want[i])
		}
	}
	if img.Manifest.MediaType != oci.MediaTypeDockerManifest || img.Config.MediaType != oci.MediaTypeDockerConfig {
		t.Errorf("manifest %s config %s", img.Manifest.MediaType, img.Config.MediaType)
	}
	if _, err := Build(ImageSpec{Layers: []Layer{{Compression: "lz4"}}}); err == nil {
		t.Error("unknown compression accepted")
	}
}

func TestRawTarKeepsHostileNamesAndOrder(t *testing.T) {
	raw := RawTar([]File{Reg("z", 0o644, "1"), Reg("../x", 0o644, "2"), Opaque("d"), Reg("/abs", 0o644, "")})
	h := readTar(t, raw)
	var names []string
	for _, x := range h {
		names = append(names, x.Name)
	}
	want := []string{"z", "../x", "d/.wh..wh..opq", "/abs"}
	if len(names) != len(want) {
		t.Fatalf("names %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("names %q, want %q", names, want)
		}
	}
	if _, err := tarFiles([]File{{Path: "s", Mode: os.ModeSocket}}); err == nil {
		t.Error("socket accepted")
	}
}
