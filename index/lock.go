package index

import (
	"errors"
	"fmt"
	"os"

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
			return nil, inUseError(dir)
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
