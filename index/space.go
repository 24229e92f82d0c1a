package index

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/casfs/casfs/internal/diskspace"
	"golang.org/x/sys/unix"
)

// A full filesystem must not kill the process. badger writes its memtable
// log and new tables through memory mappings of files it sizes without
// allocating them; where the filesystem cannot allocate a page badger
// touches, the process takes SIGBUS. Three things keep that from happening:
//
//   - every metadata write first checks that diskspace.MetaReserve is free
//     and fails with ENOSPC when it is not (content and unpack writers stop
//     at the larger diskspace.Reserve, so casfs itself never fills the disk
//     below that);
//   - the database directory holds a preallocated file of spareSize bytes,
//     removed (its blocks freed for badger) when the database is opened or
//     closed on a filesystem short of the reserve: opening replays and
//     closing flushes the memtable, and both need a little real space;
//   - with neither, the database is opened read-only: reads keep working;
//   - the memtable logs, which every write touches a new page of, get their
//     blocks allocated (fallocate) when they appear, so that a filesystem
//     filled by someone else between our check and badger's write still
//     has the page badger touches.
const (
	spareFile = "casfs-space-reserve"
	spareSize = 16 << 20
)

func lowOnSpace(dir string) bool {
	if err := diskspace.CheckMeta(dir); err != nil {
		slog.Warn("the store's filesystem is short of space: metadata writes are refused until space is freed", "dir", dir, "err", err)
		return true
	}
	return false
}

// prepareSpace runs before badger opens: it says whether to open read-only
// and whether the spare file is in place.
func prepareSpace(dir string) (readOnly, spared bool) {
	if !lowOnSpace(dir) {
		keepSpare(dir)
		return false, true
	}
	return !releaseSpare(dir), false
}

// keepSpare makes sure the spare file exists with its blocks allocated.
func keepSpare(dir string) {
	path := filepath.Join(dir, spareFile)
	if fi, err := os.Stat(path); err == nil && fi.Size() == spareSize {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, spareSize)
	f.Close()
	if err != nil {
		os.Remove(path)
		slog.Debug("no spare space file for the index", "dir", dir, "err", err)
	}
}

// releaseSpare removes the spare file, reporting whether there was one.
func releaseSpare(dir string) bool {
	err := os.Remove(filepath.Join(dir, spareFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		slog.Warn("cannot free the index's spare space", "dir", dir, "err", err)
	}
	if err == nil {
		slog.Info("freed the index's spare space for badger", "dir", dir)
	}
	return err == nil
}

// enterWrite is enter for an operation that writes: it fails with ENOSPC
// below the reserve, and once there is space again it reopens a read-only
// database read-write (when nothing else is running) and restores the
// spare file.
func (db *DB) enterWrite() (func(), error) {
	if db == nil {
		return db.enter()
	}
	if err := diskspace.CheckMeta(db.dir); err != nil {
		return nil, fmt.Errorf("write metadata: %w", err)
	}
	if err := db.reopenWritable(); err != nil {
		return nil, err
	}
	db.allocateLogs()
	return db.enter()
}

// allocateLogs allocates the blocks of memtable logs not yet allocated. It
// looks at the directory before every write, synced or not, so the look
// is kept to a few syscalls (memLogs).
func (db *DB) allocateLogs() {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.readOnly || db.closed {
		return
	}
	logs := memLogs(db.dir)
	for _, path := range logs {
		if db.allocated[path] {
			continue
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			continue // flushed and removed meanwhile
		}
		fi, err := f.Stat()
		if err == nil {
			// Never into the reserve: on a filesystem that short of space
			// writes are refused anyway.
			if free, ferr := diskspace.Free(db.dir); ferr != nil || free < diskspace.MetaReserve+fi.Size() {
				f.Close()
				return
			}
			err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, fi.Size())
		}
		f.Close()
		if err != nil {
			slog.Debug("cannot allocate a memtable log", "path", path, "err", err)
			continue
		}
		if db.allocated == nil {
			db.allocated = map[string]bool{}
		}
		db.allocated[path] = true
	}
	for path := range db.allocated {
		if !slices.Contains(logs, path) {
			delete(db.allocated, path)
		}
	}
}

func (db *DB) reopenWritable() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed || db.spared {
		return nil
	}
	keepSpare(db.dir)
	db.spared = true
	if !db.readOnly {
		return nil
	}
	if db.active > 0 {
		return fmt.Errorf("write metadata: the index is read-only since the filesystem was full; retry once running operations end")
	}
	if err := db.bdb.Close(); err != nil {
		return fmt.Errorf("reopen index %s: %w", db.dir, err)
	}
	bdb, err := openBadger(db.dir, false)
	if err != nil {
		// Keep a usable handle: the read-only one again.
		if ro, rerr := openBadger(db.dir, true); rerr == nil {
			db.bdb = ro
		}
		return err
	}
	db.bdb, db.readOnly = bdb, false
	db.allocated = nil
	slog.Info("the store's filesystem has space again: metadata is writable", "dir", db.dir)
	return nil
}

// closeBadger closes badger. On a filesystem short of space it first frees
// the spare file for the memtable flush that closing does; with no spare
// file left it leaves a writable database unclosed rather than take SIGBUS:
// its writes are synced to the memtable's log, which the next open replays,
// and the process is about to drop the store anyway.
func (db *DB) closeBadger() error {
	if !db.readOnly && !roomToFlush(db.dir) && (!releaseSpare(db.dir) || !roomToFlush(db.dir)) {
		slog.Warn("index left for the next open to replay: no space to flush it", "dir", db.dir)
		return nil
	}
	return db.bdb.Close()
}

// roomToFlush reports whether a memtable (at most half the spare file's
// size) can be written out as a table.
func roomToFlush(dir string) bool {
	free, err := diskspace.Free(dir)
	return err == nil && free >= spareSize
}

// memLogs lists the memtable logs in dir. It is filepath.Glob without the
// *os.File of os.Open, whose failed epoll registration and fcntl round
// trips would come with every index write.
func memLogs(dir string) []string {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	d := os.NewFile(uintptr(fd), dir)
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var out []string
	for _, n := range names {
		if filepath.Ext(n) == ".mem" {
			out = append(out, filepath.Join(dir, n))
		}
	}
	slices.Sort(out)
	return out
}
