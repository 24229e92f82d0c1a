package index

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/diskspace"
	badger "github.com/dgraph-io/badger/v4"
)

// DB is the badger database under <root>/meta. One process owns it at a
// time; every method is safe for concurrent use.
type DB struct {
	dir  string
	bdb  *badger.DB
	lock *dirLock

	mu       sync.Mutex // guards closed and the Add side of inflight
	closed   bool
	inflight sync.WaitGroup // operations that must finish before badger closes

	// active counts the operations in flight (under mu): a database opened
	// read-only because the filesystem was full is reopened read-write only
	// when none is (see space.go).
	active   int
	readOnly bool
	spared   bool // the spare space file was in place when last looked at

	allocated map[string]bool // memtable logs allocateLogs has done (under mu)
}

// Open opens or creates the database in dir. When another process holds
// it, the error wraps errdefs.ErrInUse and says so in one line. A database
// written by a newer casfs (a schema version this one does not know) is
// refused with errdefs.ErrFailedPrecondition.
func Open(dir string) (*DB, error) {
	if dir == "" {
		return nil, fmt.Errorf("open index: empty directory: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open index %s: %w", dir, err)
	}
	// We take badger's own lock (an flock on the directory) ourselves, so
	// that "held by someone else" is an errno we can classify instead of a
	// sentence in badger's error text, and badger skips its own attempt.
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	if err := dropEmptyLogs(dir); err != nil {
		lock.release()
		return nil, err
	}
	readOnly, spared := prepareSpace(dir)
	bdb, err := openBadger(dir, readOnly)
	if err != nil {
		lock.release()
		return nil, err
	}
	db := &DB{dir: dir, bdb: bdb, lock: lock, readOnly: readOnly, spared: spared}
	db.allocateLogs()
	if err := db.checkSchema(); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func openBadger(dir string, readOnly bool) (*badger.DB, error) {
	bdb, err := badger.Open(badgerOptions(dir).WithReadOnly(readOnly))
	if err != nil {
		if isLockError(err) {
			return nil, inUseError{dir: dir, pid: LockHolder(dir)}
		}
		if readOnly {
			return nil, fmt.Errorf("open index %s read-only: %w (%w)", dir, err, diskspace.CheckMeta(dir))
		}
		return nil, fmt.Errorf("open index %s: %w", dir, err)
	}
	return bdb, nil
}

// dropEmptyLogs removes value-log and memtable files of zero bytes. A
// process killed between creating one of them and writing its header leaves
// an empty file, and badger (v4.9) then refuses to open the database for
// good: it bootstraps the empty file but reports that as an error ("Create a
// new file"). An empty file holds no entries, so removing it loses nothing.
func dropEmptyLogs(dir string) error {
	for _, pattern := range []string{"*.vlog", "*.mem"} {
		logs, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return fmt.Errorf("open index %s: %w", dir, err)
		}
		for _, p := range logs {
			if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
				if err := os.Remove(p); err != nil {
					return fmt.Errorf("open index %s: drop empty log %s: %w", dir, filepath.Base(p), err)
				}
			}
		}
	}
	return nil
}

// badgerOptions tunes badger for a small metadata database on a small
// machine: records are a few hundred bytes, so small memtables and value-log
// files keep an empty store small and quick to open. update syncs every
// commit itself, because callers act on "recorded" (for example by deleting
// a file), except those made with an Unsynced context.
func badgerOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(slogLogger{}).
		WithSyncWrites(false).
		WithBypassLockGuard(true). // lockDir holds the same flock
		WithMetricsEnabled(false).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithValueLogFileSize(16 << 20).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(4 << 20).
		WithNumCompactors(2).
		WithNumLevelZeroTables(3).
		WithNumLevelZeroTablesStall(8).
		WithNumGoroutines(2)
}

// inUseError is the whole message when the store is held elsewhere; it is
// errdefs.ErrInUse without repeating its text. It names the holder when the
// kernel does, and claims no more: whether that process serves a socket is
// for the caller to find out.
type inUseError struct {
	dir string
	pid int // 0: unknown
}

func (e inUseError) Error() string {
	if e.pid > 0 {
		return fmt.Sprintf("store %s is locked by process %d", e.dir, e.pid)
	}
	return "store " + e.dir + " is locked by another process"
}

func (inUseError) Unwrap() error { return errdefs.ErrInUse }

// isLockError recognises badger's failure to flock its directory. We take
// the lock ourselves first, so this only matters if badger's own locking is
// ever re-enabled; badger flattens the cause into text, hence the match.
func isLockError(err error) bool {
	return strings.Contains(err.Error(), "Cannot acquire directory lock")
}

// Close flushes and closes the database and releases the directory lock.
// It waits for operations already running; later ones fail. Closing twice
// is safe and the second call returns nil.
func (db *DB) Close() error {
	if db == nil {
		return nil
	}
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	db.mu.Unlock()
	db.inflight.Wait()

	err := db.closeBadger()
	if lerr := db.lock.release(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("close index %s: %w", db.dir, err)
	}
	return nil
}

// enter registers a running operation so Close waits for it; the returned
// func ends it. It fails once Close has begun, so an operation started from
// inside another one (a List callback that deletes) cannot deadlock Close.
func (db *DB) enter() (func(), error) {
	if db == nil {
		return nil, fmt.Errorf("index not opened: %w", errdefs.ErrFailedPrecondition)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return nil, fmt.Errorf("index %s is closed: %w", db.dir, errdefs.ErrFailedPrecondition)
	}
	db.inflight.Add(1)
	db.active++
	return func() {
		db.mu.Lock()
		db.active--
		db.mu.Unlock()
		db.inflight.Done()
	}, nil
}

// maxConflictRetries bounds how often a read-modify-write is retried when
// other writers keep winning; each lost round means another commit landed.
const maxConflictRetries = 1000

// update runs fn in a read-write transaction, retrying it from scratch when
// badger reports a conflict with a concurrent commit. fn may therefore run
// more than once. An error from fn discards the transaction and is returned
// as it is.
func (db *DB) update(ctx context.Context, fn func(*badger.Txn) error) error {
	done, err := db.enterWrite()
	if err != nil {
		return err
	}
	defer done()
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := db.bdb.Update(fn)
		if err == nil && !unsynced(ctx) {
			if err := db.bdb.Sync(); err != nil {
				return fmt.Errorf("index %s: sync: %w", db.dir, err)
			}
		}
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
		if attempt >= maxConflictRetries {
			return fmt.Errorf("index %s: gave up after %d conflicting writes: %w",
				db.dir, attempt+1, errdefs.ErrLocked)
		}
	}
}

// view runs fn in a read-only transaction (a consistent snapshot).
func (db *DB) view(ctx context.Context, fn func(*badger.Txn) error) error {
	done, err := db.enter()
	if err != nil {
		return err
	}
	defer done()
	if err := ctx.Err(); err != nil {
		return err
	}
	return db.bdb.View(fn)
}

// Dir is the directory the database lives in.
func (db *DB) Dir() string { return db.dir }

// The tables. Keys are the caller's: a blob's digest string, an image's
// name, a snapshot's key, a lease's ID.
func (db *DB) Blobs() Table[Blob]   { return Table[Blob]{db: db, prefix: "blob/", kind: "blob"} }
func (db *DB) Images() Table[Image] { return Table[Image]{db: db, prefix: "image/", kind: "image"} }
func (db *DB) Snapshots() Table[Snapshot] {
	return Table[Snapshot]{db: db, prefix: "snapshot/", kind: "snapshot"}
}
func (db *DB) Leases() Table[Lease] { return Table[Lease]{db: db, prefix: "lease/", kind: "lease"} }
