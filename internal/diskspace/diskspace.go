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
	if isRoot {
		return int64(st.Bfree) * st.Bsize
	}
	return int64(st.Bavail) * st.Bsize
}

// isRoot is read once: asking on every check cost a system call per
// unpacked file.
var isRoot = unix.Geteuid() == 0

// CheckFd fails with an *Error when writing need more bytes to the
// filesystem of fd would leave less than Reserve free.
func CheckFd(fd int, need int64) error {
	var b Budget
	return b.CheckFd(fd, need)
}

// Slack is how many bytes a Budget lets through between two looks at the
// filesystem: small next to the headroom between Reserve and MetaReserve,
// so that a few writers running at once stay clear of the database's share.
const Slack int64 = 4 << 20

// fileCost is what a Budget counts for a file beyond its bytes: a block
// and an inode.
const fileCost int64 = 4 << 10

// Budget is CheckFd for a writer of many files (an unpack), which would
// otherwise ask the filesystem once per file: it asks again only after it
// has let Slack bytes through (or fewer, when the last answer left less
// room above Reserve). The zero value asks at the first check.
type Budget struct{ left int64 }

// CheckFd fails with an *Error when writing need more bytes (in a new file)
// to the filesystem of fd would leave less than Reserve free.
func (b *Budget) CheckFd(fd int, need int64) error {
	cost := need + fileCost
	if cost <= b.left {
		b.left -= cost
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	free := available(&st)
	if free-need < Reserve {
		b.left = 0
		return &Error{Free: free, Keep: Reserve}
	}
	b.left = min(free-cost-Reserve, Slack)
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
