package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

const discardFloor = 16 << 30

var discardWarned sync.Once

// discard moves a cold run's tree out of the way, to be removed when its
// group ends (emptyDiscarded), not between runs. On an ext4 without a
// journal, like this bench's machines' root, a new file never takes an
// inode freed in the last minute (five while its table block is dirty):
// a pull that followed the removal of the last run's 14k files searched
// past them for every file it created (find_inode_bit and
// recently_deleted were 13% of the machine's CPU during a realistic pull,
// which took 3.0 s that way and 2.3 s after none). Nodes rarely remove a
// tree of that size just before a pull; both sides start fresh instead.
//
// A filesystem with less than discardFloor free removes the tree at once:
// the pull group keeps about 20 GiB aside by its end.
func (e *env) discard(path string) {
	var st unix.Statfs_t
	if err := unix.Statfs(e.work, &st); err != nil || st.Bavail*uint64(st.Bsize) < discardFloor {
		discardWarned.Do(func() { logf("less than %d GiB free: cold runs' trees are removed at once", discardFloor>>30) })
		os.RemoveAll(path)
		return
	}
	dir := filepath.Join(e.work, "discarded")
	if err := os.MkdirAll(dir, 0o755); err == nil {
		e.discarded++
		err = os.Rename(path, filepath.Join(dir, strconv.Itoa(e.discarded)))
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return
		}
	}
	os.RemoveAll(path)
}

// emptyDiscarded removes what discard kept.
func (e *env) emptyDiscarded() {
	os.RemoveAll(filepath.Join(e.work, "discarded"))
	syncAll()
}
