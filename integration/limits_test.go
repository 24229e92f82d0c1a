package integration

import (
	"fmt"
	"testing"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// TestPullUnpackLimits pulls an image whose first layer is a small gzip
// bomb (one file of 64 MiB of zeros) and whose second holds 3,000 files,
// with limits below each: the pull exits 1 (2 for a bad limit) with one line naming the layer
// and the limit, keeps no snapshot, and the store checks clean. Without
// the limits the same image pulls.
func TestPullUnpackLimits(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	many := []testimage.File{testimage.Dir("many", 0o755)}
	for i := 0; i < 3000; i++ {
		many = append(many, testimage.Reg(fmt.Sprintf("many/f%d", i), 0o644, ""))
	}
	img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{
		{Files: []testimage.File{testimage.Reg("zeros", 0o644, string(make([]byte, 64<<20)))}},
		{Files: many},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if size := img.Layers[0].Size; size > 1<<20 {
		t.Fatalf("bomb layer is %d bytes compressed, not small", size)
	}
	ref := pushTestImage(t, reg, "lab/bomb", "1", img)
	cases := []struct {
		name  string
		flags []string
		env   string
		layer int
		text  string
	}{
		{"layer bytes flag", []string{"--max-layer-bytes", "16M"}, "", 0, "layer exceeds the limit of 16777216 unpacked bytes"},
		{"image bytes env", nil, "CASFS_MAX_IMAGE_BYTES=32M", 0, "image exceeds the limit of 33554432 unpacked bytes"},
		{"layer entries flag", []string{"--max-layer-entries", "1000"}, "", 1, "layer exceeds the limit of 1000 entries"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newRaceCLI(t)
			if tc.env != "" {
				c.Env = append(c.Env, tc.env)
			}
			args := append(append([]string{"image", "pull", "--plain-http", "-q"}, tc.flags...), ref)
			c.Fail(1, nil, args, tc.text, img.Layers[tc.layer].Digest.String())
			// Only the layers below the refused one are kept, whole.
			if out := c.OK(nil, "snapshot", "ls", "-q"); len(lines(out)) != tc.layer {
				t.Errorf("want %d snapshots after refusing layer %d, got:\n%s", tc.layer, tc.layer, out)
			}
			c.OK(nil, "check")
			c.Env = nil
			c.OK(nil, "image", "pull", "--plain-http", "-q", ref)
		})
	}
	// image mount unpacks a --no-unpack image on demand, under its limits.
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "-q", "--no-unpack", ref)
	c.Fail(1, nil, []string{"image", "mount", "--max-layer-bytes", "16M", ref, t.TempDir()}, "layer exceeds the limit of 16777216 unpacked bytes", img.Layers[0].Digest.String())
	if out := c.OK(nil, "snapshot", "ls", "-q"); len(lines(out)) != 0 {
		t.Errorf("snapshots left after a refused image mount:\n%s", out)
	}
	c.OK(nil, "check")
	c.Fail(2, nil, []string{"image", "pull", "--plain-http", "--max-layer-bytes", "lots", ref}, `--max-layer-bytes "lots"`)
}
