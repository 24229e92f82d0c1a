package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// KernelCacheLock serialises, across test processes and packages, the tests
// that make the kernel forget every unused inode (writing
// /proc/sys/vm/drop_caches) or count the nodes a FUSE mount's kernel side
// holds: a drop from another test between a walk and its count makes the
// count wrong. make test runs packages side by side, so a fusefs test and an
// integration test can meet. The lock (an flock on a file in the temporary
// directory) is held until the test ends; the wait for it is bounded.
func KernelCacheLock(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "casfs-test-kernel-cache.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("kernel cache lock: %v", err)
	}
	deadline := time.Now().Add(15 * time.Minute)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("kernel cache lock: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded above
	}
	t.Cleanup(func() { f.Close() }) // closing the file releases the lock
}
