package store

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testimage"
)

// openAs opens a store that acts as a machine of platform p.
func openAs(t *testing.T, p ocispec.Platform) *Local {
	t.Helper()
	s, err := Open(t.TempDir(), Options{Create: true, Platform: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var (
	linuxAmd64   = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	linuxArm64   = ocispec.Platform{OS: "linux", Architecture: "arm64"}
	linuxArm64v8 = ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

// twoPlatforms is an index of an amd64 and an arm64/v8 image (as docker
// hub's indexes name arm64), each with one distinct layer.
func twoPlatforms(t *testing.T) (idx *testimage.Index, amd, arm *testimage.Image) {
	t.Helper()
	amd = gcImage(t, "linux/amd64", "amd")
	spec := testimage.ImageSpec{Platform: linuxArm64v8, Layers: []testimage.Layer{{Files: []testimage.File{testimage.Reg("arm", 0o644, "arm\n")}}}}
	arm, err := testimage.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	idx, err = testimage.BuildIndex([]*testimage.Image{amd, arm}, false)
	if err != nil {
		t.Fatal(err)
	}
	return idx, amd, arm
}

// wantShown checks that GetImage and the mount's view of name show the
// manifest of img.
func wantShown(t *testing.T, s *Local, name string, img *testimage.Image) {
	t.Helper()
	manifest, view := shown(t, s, name)
	if !bytes.Equal(manifest, img.ManifestBytes()) {
		t.Errorf("%s: GetImage manifest = %.80q, want %s", name, manifest, img.Manifest.Digest)
	}
	if string(view) != img.Manifest.Digest.String() {
		t.Errorf("%s: mount view manifest = %s, want %s", name, view, img.Manifest.Digest)
	}
}

// shown is the manifest GetImage and the mount's view show for name.
func shown(t *testing.T, s *Local, name string) (detail, view []byte) {
	t.Helper()
	ctx := context.Background()
	d, err := s.GetImage(ctx, name, "")
	if err != nil {
		t.Fatal(err)
	}
	views, err := s.ImageViews(ctx)
	if err != nil {
		t.Fatal(err)
	}
	full, err := NormalizeName(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range views {
		if v.Name == full {
			view = []byte(v.Layers.Manifest.Digest)
		}
	}
	return d.Manifest, view
}

// An index that nests an index shows its manifest (GetImage, the mount's
// view, image ls's platforms) like a flat one does.
func TestNestedIndexShowsItsManifest(t *testing.T) {
	t.Parallel()
	s := openAs(t, linuxAmd64)
	idx, amd, _ := twoPlatforms(t)
	nested, err := testimage.NestIndex(idx)
	if err != nil {
		t.Fatal(err)
	}
	putImage(t, s, "lab/nested:1", nested.Desc, nested.Blobs, false)
	wantShown(t, s, "lab/nested:1", amd)
	imgs, err := s.ListImages(context.Background())
	if err != nil || len(imgs) != 1 {
		t.Fatalf("ListImages = %v, %v", imgs, err)
	}
	if got := imgs[0].Platforms; !slices.Equal(got, []string{"linux/amd64", "linux/arm64/v8"}) {
		t.Errorf("platforms = %v", got)
	}
}

// On an arm64 machine, an image of all platforms shows the arm64/v8
// manifest, not the index's first.
func TestArm64HostShowsArm64Manifest(t *testing.T) {
	t.Parallel()
	s := openAs(t, linuxArm64)
	idx, _, arm := twoPlatforms(t)
	putImage(t, s, "lab/multi:1", idx.Desc, idx.Blobs, false)
	wantShown(t, s, "lab/multi:1", arm)
}

// GetImage with a platform shows that platform's manifest of an index, and
// names the platforms it has when it has no manifest for the one asked.
func TestGetImagePlatform(t *testing.T) {
	t.Parallel()
	s := openAs(t, linuxAmd64)
	idx, amd, arm := twoPlatforms(t)
	putImage(t, s, "lab/multi:1", idx.Desc, idx.Blobs, false)
	ctx := context.Background()
	for platform, want := range map[string]*testimage.Image{"": amd, "linux/amd64": amd, "linux/arm64": arm, "linux/arm64/v8": arm} {
		d, err := s.GetImage(ctx, "lab/multi:1", platform)
		if err != nil {
			t.Fatalf("GetImage platform %q: %v", platform, err)
		}
		if !bytes.Equal(d.Manifest, want.ManifestBytes()) {
			t.Errorf("GetImage platform %q: manifest %.60q, want %s", platform, d.Manifest, want.Manifest.Digest)
		}
		if len(d.Layers) != 1 || d.Layers[0].Digest != want.Layers[0].Digest {
			t.Errorf("GetImage platform %q: layers %v, want %s", platform, d.Layers, want.Layers[0].Digest)
		}
	}
	_, err := s.GetImage(ctx, "lab/multi:1", "linux/s390x")
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "it has linux/amd64, linux/arm64/v8") {
		t.Errorf("GetImage linux/s390x: %v, want not found naming linux/amd64, linux/arm64/v8", err)
	}
	if _, err := s.GetImage(ctx, "lab/multi:1", "linx"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("GetImage platform linx: %v, want invalid argument", err)
	}
}

// exportMembers exports ref with opts and returns the archive's member names.
func exportMembers(t *testing.T, s *Local, ref string, opts ExportOptions) ([]string, error) {
	t.Helper()
	var buf bytes.Buffer
	if err := s.ExportImages(context.Background(), &buf, []string{ref}, opts); err != nil {
		return nil, err
	}
	var names []string
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

// image export --platform linux/arm64 finds the index's linux/arm64/v8
// manifest, on any machine; an absent platform is named in the error.
func TestExportPlatformArm64FindsV8(t *testing.T) {
	t.Parallel()
	s := openAs(t, linuxAmd64)
	idx, amd, arm := twoPlatforms(t)
	putImage(t, s, "lab/multi:1", idx.Desc, idx.Blobs, false)
	names, err := exportMembers(t, s, "lab/multi:1", ExportOptions{Platform: "linux/arm64"})
	if err != nil {
		t.Fatal(err)
	}
	has := func(d ocispec.Descriptor) bool { return slices.Contains(names, "blobs/sha256/"+d.Digest.Encoded()) }
	if !has(arm.Manifest) || !has(arm.Layers[0]) || has(amd.Manifest) || has(amd.Layers[0]) {
		t.Errorf("export of linux/arm64 has members %v; want the arm64 image only", names)
	}
	_, err = exportMembers(t, s, "lab/multi:1", ExportOptions{Platform: "linux/s390x"})
	if !errors.Is(err, errdefs.ErrNotFound) || !bytes.Contains([]byte(err.Error()), []byte("image has no linux/s390x manifest")) {
		t.Errorf("export of an absent platform: err = %v", err)
	}
}
