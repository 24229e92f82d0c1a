package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// An image whose index nests another index (the manifests one level down)
// is pulled, listed with its platform, and shows its manifest in the mount.
func TestNestedIndexInMountAndLs(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	img, err := testimage.Build(testimage.ImageSpec{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Layers:   []testimage.Layer{{Files: []testimage.File{testimage.Reg("nested", 0o644, "nested\n")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := testimage.BuildIndex([]*testimage.Image{img}, false)
	if err != nil {
		t.Fatal(err)
	}
	outer, err := testimage.NestIndex(inner)
	if err != nil {
		t.Fatal(err)
	}
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testimage.Push(ctx, reg.URL, "lab/nested", "1", outer.Blobs, outer.Desc, reg.Client()); err != nil {
		t.Fatal(err)
	}
	ref := reg.Ref("lab/nested", "1")
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "-q", ref)

	var infos []struct {
		Name      string   `json:"name"`
		Platforms []string `json:"platforms"`
	}
	if err := json.Unmarshal([]byte(c.OK(nil, "image", "ls", "--format", "json")), &infos); err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Name != ref || !slices.Equal(infos[0].Platforms, []string{"linux/" + runtime.GOARCH}) {
		t.Errorf("image ls = %+v, want %s with platform linux/%s", infos, ref, runtime.GOARCH)
	}

	mnt := mountCASFS(t, c)
	dir := filepath.Join(mnt, "images", strings.TrimSuffix(ref, ":1"), "1")
	got, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil || !bytes.Equal(got, img.ManifestBytes()) {
		t.Errorf("manifest.json = %.80q, %v; want the image's manifest", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "index.json")); err != nil || !bytes.Equal(got, outer.Blobs[outer.Desc.Digest]) {
		t.Errorf("index.json = %.80q, %v; want the outer index", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "rootfs", "nested")); err != nil || string(got) != "nested\n" {
		t.Errorf("rootfs/nested = %q, %v", got, err)
	}
}
