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

// image ls shows every platform of an index, the ones not pulled in
// parentheses, and a LABELS column; image ls and content ls take ctr's
// filters.
func TestImageListPlatformsAndFilters(t *testing.T) {
	t.Parallel()
	other := "arm64"
	if runtime.GOARCH == other {
		other = "amd64"
	}
	idx := platformIndex(t, []string{runtime.GOARCH, other}, func(arch string) []testimage.Layer {
		return []testimage.Layer{{Files: []testimage.File{testimage.Reg("arch", 0o644, arch+"\n")}}}
	})
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testimage.Push(ctx, reg.URL, "lab/multi", "1", idx.Blobs, idx.Desc, reg.Client()); err != nil {
		t.Fatal(err)
	}
	ref := reg.Ref("lab/multi", "1")
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "--no-unpack", "-q", ref)
	c.OK(nil, "image", "tag", ref, "lab.local/copy:2")

	out := lines(c.OK(nil, "image", "ls"))
	if len(out) != 3 || !strings.Contains(out[0], "PLATFORMS") || !strings.HasSuffix(strings.TrimSpace(out[0]), "LABELS") {
		t.Fatalf("image ls:\n%s", strings.Join(out, "\n"))
	}
	want := "linux/" + runtime.GOARCH + ",(linux/" + other + ")"
	for _, l := range out[1:] {
		if !strings.Contains(l, want) {
			t.Errorf("image ls line %q does not show %s", l, want)
		}
	}
	var infos []struct {
		RemotePlatforms []string `json:"remotePlatforms"`
	}
	if err := json.Unmarshal([]byte(c.OK(nil, "image", "ls", "--format", "json")), &infos); err != nil || len(infos) != 2 || !slices.Equal(infos[0].RemotePlatforms, []string{"linux/" + other}) {
		t.Fatalf("image ls --format json: %+v %v", infos, err)
	}

	for args, want := range map[string]string{
		"name~=^lab\\.local/": "lab.local/copy:2",
		"name==" + ref:        ref,
		"target.digest==" + idx.Desc.Digest.String() + ",name~=copy": "lab.local/copy:2",
		"labels.nothing": "",
	} {
		if got := strings.TrimSpace(c.OK(nil, "image", "ls", "-q", args)); got != want {
			t.Errorf("image ls -q %s = %q, want %q", args, got, want)
		}
	}
	c.Fail(2, nil, []string{"image", "ls", "name~=("}, "filter")
	c.Fail(2, nil, []string{"image", "ls", "nmae==x"}, "unknown field nmae")

	man := idx.Desc.Digest.String()
	c.OK(nil, "content", "label", man, "team=blue")
	if got := strings.TrimSpace(c.OK(nil, "content", "ls", "-q", `labels."team"==blue`)); got != man {
		t.Errorf("content ls -q labels.team==blue = %q, want %s", got, man)
	}
}
