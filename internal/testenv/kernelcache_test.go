package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKernelCacheLockHeldForTheTest: while a test holds the lock, another
// open of the lock file (as another process would make) cannot take it;
// once that test ends, it can.
func TestKernelCacheLockHeldForTheTest(t *testing.T) {
	other, err := os.OpenFile(filepath.Join(os.TempDir(), "casfs-test-kernel-cache.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	t.Run("holder", func(t *testing.T) {
		KernelCacheLock(t)
		if err := unix.Flock(int(other.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
			t.Fatalf("lock taken by another open file while a test holds it: %v", err)
		}
	})
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("lock still held after the test ended: %v", err)
	}
}
