package index

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// dirLock is an exclusive flock on the database directory: the same lock
// badger takes, so a casfs process and any other badger program exclude
// each other. flock locks belong to the open file, so a second Open in the
// same process is refused too.
type dirLock struct{ f *os.File }

func lockDir(dir string) (*dirLock, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, inUseError{dir: dir, pid: LockHolder(dir)}
		}
		return nil, fmt.Errorf("lock index %s: %w", dir, err)
	}
	return &dirLock{f: f}, nil
}

// release drops the lock; closing the descriptor is what releases it.
func (l *dirLock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// LockHolder is the id of the process holding the database lock of dir,
// read from /proc/locks; 0 when nobody holds it or the kernel does not say
// (another pid namespace, no /proc). It is what the kernel recorded when
// the lock was taken, so it names the process that opened the store.
func LockHolder(dir string) int {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	return lockHolderIn(bufio.NewScanner(f), unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
}

// lockHolderIn finds the holder of the flock on one inode in the lines of
// /proc/locks: "1: FLOCK  ADVISORY  WRITE 4242 00:2a:1312 0 EOF". Lines of
// processes waiting for a lock ("1: -> FLOCK ...") are not holders.
func lockHolderIn(lines *bufio.Scanner, major, minor uint32, ino uint64) int {
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}
