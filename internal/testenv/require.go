package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// extraDirs are searched after PATH: mount helpers and daemons live in sbin,
// which a non-login shell's PATH may lack.
var extraDirs = []string{"/usr/sbin", "/sbin"}

// lookPath finds cmd in PATH or, failing that, in /usr/sbin and /sbin.
func lookPath(cmd string) (string, error) {
	if p, err := exec.LookPath(cmd); err == nil {
		return p, nil
	}
	for _, d := range extraDirs {
		p := filepath.Join(d, cmd)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH, /usr/sbin or /sbin", cmd)
}

// Require fails the test when any of cmds cannot be found. It never skips:
// make test installs every prerequisite, so a missing one is a broken
// machine, and a skipped test would hide it.
func Require(t testing.TB, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := lookPath(c); err != nil {
			missing(t, c)
		}
	}
}

// RequireRoot fails the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "root")
	}
}

// RequireFUSE fails the test unless /dev/fuse and fusermount3 are present.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing(t, "/dev/fuse")
	}
	Require(t, "fusermount3")
}

func missing(t testing.TB, what string) {
	t.Helper()
	t.Fatalf("prerequisite %s missing (make prereqs installs it)", what)
}
