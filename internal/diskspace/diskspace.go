// Package diskspace keeps free space on the store's filesystem for its
// metadata database.
//
// badger writes its memtable log and its tables through memory mappings of
// files that are sized up front but not allocated. On a full filesystem the
// kernel cannot back a page badger touches, and the process dies with
// SIGBUS instead of seeing ENOSPC. So casfs never lets its own writers take
// the last Reserve bytes of the filesystem: content and unpacked files stop
// with ENOSPC below Reserve, and metadata writes are refused below
// MetaReserve. What lies between the two is the headroom badger's mapped
// writes, memtable flushes and compactions use.
package diskspace

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	// Reserve is the free space below which content and unpack writes stop.
	Reserve int64 = 64 << 20
	// MetaReserve is the free space below which metadata writes are refused.
	MetaReserve int64 = 32 << 20
)

// Error says how much space was left and what is kept; it wraps ENOSPC.
type Error struct {
	Free, Keep int64
}

func (e *Error) Error() string {
	return fmt.Sprintf("no space left on device (ENOSPC): %s free on the store's filesystem, and casfs keeps %s for its metadata",
		mib(e.Free), mib(e.Keep))
}

func (e *Error) Unwrap() error { return syscall.ENOSPC }

func mib(n int64) string {
	if n < 0 {
		n = 0
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// Free is the space an unprivileged writer can still use on the
// filesystem that holds path.
func Free(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return available(&st), nil
}

func available(st *unix.Statfs_t) int64 {
	// Root may use the blocks a filesystem keeps for it; others may not.
	if unix.Geteuid() == 0 {
		return int64(st.Bfree) * st.Bsize
	}
	return int64(st.Bavail) * st.Bsize
}

// CheckFd fails with an *Error when writing need more bytes to the
// filesystem of fd would leave less than Reserve free.
func CheckFd(fd int, need int64) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if free := available(&st); free-need < Reserve {
		return &Error{Free: free, Keep: Reserve}
	}
	return nil
}

// CheckMeta fails with an *Error when the filesystem holding dir has less
// than MetaReserve free: a metadata write could then touch a page that
// cannot be allocated.
func CheckMeta(dir string) error {
	free, err := Free(dir)
	if err != nil {
		return err
	}
	if free < MetaReserve {
		return &Error{Free: free, Keep: MetaReserve}
	}
	return nil
}
