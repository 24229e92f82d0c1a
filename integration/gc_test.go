package integration

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

func gcTestImage(t *testing.T, files ...string) *testimage.Image {
	t.Helper()
	var spec testimage.ImageSpec
	for _, f := range files {
		spec.Layers = append(spec.Layers, testimage.Layer{Files: []testimage.File{testimage.Reg(f, 0o644, f+"\n")}})
	}
	spec.Config = ocispec.ImageConfig{Cmd: []string{"/bin/true"}}
	img, err := testimage.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestGCCommands(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	a := gcTestImage(t, "base", "only-a")
	b := gcTestImage(t, "base", "only-b")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for repo, img := range map[string]*testimage.Image{"lab/a": a, "lab/b": b} {
		if err := testimage.Push(ctx, reg.URL, repo, "1", img.Blobs, img.Manifest, reg.Client()); err != nil {
			t.Fatal(err)
		}
	}
	refA, refB := reg.Ref("lab/a", "1"), reg.Ref("lab/b", "1")
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", refA)
	c.OK(nil, "image", "pull", "--plain-http", refB)

	// A blob an image needs is refused, naming the image; a free one goes.
	c.Fail(1, nil, []string{"content", "rm", a.Layers[1].Digest.String()}, "image "+refA, "--force")
	free := strings.TrimSpace(c.OK(strings.NewReader("free"), "content", "ingest", "-q", "free"))
	c.OK(nil, "content", "rm", free)

	// Remove a; a dry run lists its own blobs and changes nothing.
	c.OK(nil, "image", "rm", refA)
	// The index's own files change whenever it is opened; what a dry run
	// must not touch is blobs, snapshots and records.
	before := treeOf(t, filepath.Join(c.Root, "blobs"))
	beforeSnaps := treeOf(t, filepath.Join(c.Root, "snapshots"))
	beforeList := c.OK(nil, "content", "ls", "-q")
	dry := c.OK(nil, "gc", "--dry-run")
	own := []string{a.Manifest.Digest.String(), a.Config.Digest.String(), a.Layers[1].Digest.String()}
	for _, d := range own {
		if !strings.Contains(dry, "would remove blob "+d) {
			t.Errorf("gc --dry-run does not list %s:\n%s", d, dry)
		}
	}
	if strings.Contains(dry, a.Layers[0].Digest.String()) || !strings.Contains(dry, "would reclaim ") {
		t.Errorf("gc --dry-run output:\n%s", dry)
	}
	if !sameTree(before, treeOf(t, filepath.Join(c.Root, "blobs"))) || !sameTree(beforeSnaps, treeOf(t, filepath.Join(c.Root, "snapshots"))) ||
		c.OK(nil, "content", "ls", "-q") != beforeList {
		t.Fatalf("gc --dry-run changed the store")
	}
	out := c.OK(nil, "gc", "-q")
	got := lines(out)
	slices.Sort(got)
	if len(got) != 4 { // three blobs and the top snapshot of a
		t.Fatalf("gc -q removed %q", got)
	}
	left := lines(c.OK(nil, "content", "ls", "-q"))
	for d := range b.Blobs {
		if !slices.Contains(left, d.String()) {
			t.Errorf("blob %s of %s was collected", d, refB)
		}
	}
	for _, d := range own {
		if slices.Contains(left, d) {
			t.Errorf("blob %s of the removed image survived", d)
		}
	}

	// Leases, in ctr's shape.
	if id := strings.TrimSpace(c.OK(nil, "lease", "create", "--id", "keep", "--expires", "1h", "--label", "who=test")); id != "keep" {
		t.Fatalf("lease create printed %q", id)
	}
	c.Fail(1, nil, []string{"lease", "create", "--id", "keep"}, "keep")
	c.Fail(2, nil, []string{"lease", "create", "--id", "no/slash"}, "lease id")
	c.Fail(2, nil, []string{"lease", "create", "--label", "novalue"}, "key=value")
	if ls := c.OK(nil, "lease", "ls"); !strings.Contains(ls, "keep") || !strings.Contains(ls, "who=test") {
		t.Fatalf("lease ls:\n%s", ls)
	}
	c.OK(nil, "lease", "rm", "keep")
	c.Fail(1, nil, []string{"lease", "rm", "keep"}, "not found")
	c.Fail(2, nil, []string{"gc", "extra"}, "wrong number of arguments")

	// image prune: a digest-only name that a tag also points at goes;
	// --all takes the rest, and what only they needed.
	byDigest := reg.Host + "/lab/b@" + b.Manifest.Digest.String()
	c.OK(nil, "image", "tag", refB, byDigest)
	if out := c.OK(nil, "image", "prune", "-q"); strings.TrimSpace(out) != byDigest {
		t.Fatalf("image prune removed %q, want %s", out, byDigest)
	}
	out = c.OK(nil, "image", "prune", "--all")
	if !strings.Contains(out, "removed image "+refB) || !strings.Contains(out, "removed blob "+b.Layers[0].Digest.String()) {
		t.Fatalf("image prune --all:\n%s", out)
	}
	if left := c.OK(nil, "content", "ls", "-q"); strings.TrimSpace(left) != "" {
		t.Fatalf("blobs left after pruning every image:\n%s", left)
	}
}

// The same commands work through a mount daemon's socket.
func TestGCThroughDaemon(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	c := newCLI(t)
	d := strings.TrimSpace(c.OK(strings.NewReader("garbage"), "content", "ingest", "-q", "g"))
	mountCASFS(t, c)
	c.OK(nil, "lease", "create", "--id", "through-socket")
	if out := c.OK(nil, "lease", "ls", "-q"); strings.TrimSpace(out) != "through-socket" {
		t.Fatalf("lease ls -q through the daemon: %q", out)
	}
	if out := c.OK(nil, "content", "prune", "--dry-run"); !strings.Contains(out, "would remove blob "+d) {
		t.Fatalf("content prune --dry-run through the daemon:\n%s", out)
	}
	if out := c.OK(nil, "content", "prune", "--format", "json"); !strings.Contains(out, d) || !strings.Contains(out, `"reclaimed": 7`) {
		t.Fatalf("content prune through the daemon:\n%s", out)
	}
	c.OK(nil, "lease", "rm", "through-socket")
}

func sameTree(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
