package integration

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/casfs/casfs/internal/testenv"
)

// TestDemoScript runs make demo's script, the README's first command,
// against the binary under test: it must go through every step (mount,
// pull, read through the mount, runc, overlay, lazy start) and say what
// each shows.
func TestDemoScript(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../scripts/demo.sh")
	cmd.Env = append(os.Environ(), "CASFS="+plainBin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"hello from an image served by casfs",
		"PRETTY_NAME=",
		"layer blobs stored: 0 of 1",
		"== 9. unmount",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
