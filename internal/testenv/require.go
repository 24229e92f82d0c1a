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

// LookPath finds cmd in PATH or, failing that, in /usr/sbin and /sbin.
func LookPath(cmd string) (string, error) {
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

// Require skips the test when any of cmds cannot be found, or fails it when
// the environment variable CI is non-empty: CI must run every test.
func Require(t testing.TB, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := LookPath(c); err != nil {
			missing(t, c)
		}
	}
}

// RequireRoot skips (or fails under CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "root")
	}
}

// RequireFUSE skips (or fails under CI) unless /dev/fuse and fusermount3
// are present.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing(t, "/dev/fuse")
	}
	Require(t, "fusermount3")
}

func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("prerequisite %s missing (CI is set, so this fails instead of skipping)", what)
	}
	t.Skipf("prerequisite %s missing", what)
}
