package testenv

import (
	"os"
	"strings"
	"testing"
)

func TestStartContainerd(t *testing.T) {
	RequireRoot(t)
	c := StartContainerd(t)
	out := c.Ctr(t, "version")
	if !strings.Contains(out, "Server:") {
		t.Fatalf("ctr version did not reach the server:\n%s", out)
	}
	if _, err := os.Stat(c.Root); err != nil {
		t.Fatalf("containerd did not use its own root: %v", err)
	}
	if got := c.Ctr(t, "images", "ls", "-q"); strings.TrimSpace(got) != "" {
		t.Fatalf("a fresh containerd lists images: %q", got)
	}
}
