package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casfs/casfs/internal/testenv"
)

// TestSnapshotPrune: snapshots of a removed image go, those of a kept one stay.
func TestSnapshotPrune(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/prune", "1", img)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "-q", ref)
	keys := lines(c.OK(nil, "snapshot", "ls", "-q"))
	if len(keys) != len(img.Layers) {
		t.Fatalf("snapshot ls -q after pull: %q", keys)
	}
	if out := c.OK(nil, "snapshot", "prune"); strings.Contains(out, "removed") {
		t.Fatalf("prune removed snapshots of a live image:\n%s", out)
	}
	c.OK(nil, "image", "rm", ref)
	dry := c.OK(nil, "snapshot", "prune", "--dry-run")
	if got := lines(c.OK(nil, "snapshot", "ls", "-q")); len(got) != len(keys) {
		t.Fatalf("--dry-run removed snapshots: %q\n%s", got, dry)
	}
	for _, k := range keys {
		if !strings.Contains(dry, k) {
			t.Errorf("dry run does not name %s:\n%s", k, dry)
		}
	}
	c.OK(nil, "snapshot", "prune")
	if got := c.OK(nil, "snapshot", "ls", "-q"); got != "" {
		t.Fatalf("snapshots left after prune: %q", got)
	}
	if ents, _ := os.ReadDir(filepath.Join(c.Root, "snapshots")); len(ents) != 0 {
		t.Fatalf("%d snapshot folders left on disk", len(ents))
	}
}
