package cas

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Files of an ingest folder. "ref" is written last when an ingest starts,
// so a folder without it never held data worth resuming.
const (
	fileData      = "data"
	fileRef       = "ref"
	fileTotal     = "total"
	fileExpected  = "expected"
	fileStartedAt = "startedat"
	fileUpdatedAt = "updatedat"
	fileLock      = "lock"

	// trashPrefix marks an ingest folder renamed away for removal: renaming
	// first means nobody can open the old lock file by path any more.
	trashPrefix = ".trash-"
)

// lockIngest opens ref's lock file and takes an exclusive, non-blocking
// flock on it. flock belongs to the open file description, so two Writers
// in one process conflict just like two processes do, and the kernel drops
// the lock when a holder dies. With create false a missing ingest is
// ErrNotFound instead of being created.
func (s *Store) lockIngest(ref string, create bool) (string, *os.File, error) {
	dir := s.ingestDir(ref)
	path := filepath.Join(dir, fileLock)
	for attempt := 0; attempt < 100; attempt++ {
		if create {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return "", nil, fmt.Errorf("ingest %q: %w", ref, err)
			}
		} else if _, err := os.Stat(dir); err != nil {
			return "", nil, ingestErr(ref, err)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the folder was removed under us; look again
		}
		if err != nil {
			return "", nil, fmt.Errorf("ingest %q: %w", ref, err)
		}
		if err := flock(f); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return "", nil, fmt.Errorf("ingest %q is being written by another writer: %w", ref, errdefs.ErrLocked)
			}
			return "", nil, fmt.Errorf("lock ingest %q: %w", ref, err)
		}
		// The holder we waited for may have removed the folder before we got
		// the lock: only a lock on the file still at the path counts.
		if same, err := sameFile(f, path); err != nil || !same {
			f.Close()
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return "", nil, fmt.Errorf("lock ingest %q: %w", ref, err)
			}
			continue
		}
		return dir, f, nil
	}
	return "", nil, fmt.Errorf("lock ingest %q: its folder keeps being replaced: %w", ref, errdefs.ErrLocked)
}

func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

func sameFile(f *os.File, path string) (bool, error) {
	a, err := f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// removeIngest deletes a locked ingest folder and then drops the lock.
func (s *Store) removeIngest(dir string, lock *os.File) error {
	defer lock.Close()
	trash := filepath.Join(s.ingestRoot(), trashPrefix+filepath.Base(dir)+"-"+randomSuffix())
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("remove ingest %s: %w", filepath.Base(dir), err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove ingest %s: %w", filepath.Base(dir), err)
	}
	return nil
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func ingestErr(ref string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ingest %q: %w", ref, errdefs.ErrNotFound)
	}
	return fmt.Errorf("ingest %q: %w", ref, err)
}

// Status reads the state of ref's ingest from disk; ErrNotFound when there
// is none. Offset is what has reached the data file, which for a writer in
// another goroutine may lag what it has accepted.
func (s *Store) Status(ctx context.Context, ref string) (Status, error) {
	if err := checkRef(ref); err != nil {
		return Status{}, err
	}
	st, err := readStatus(s.ingestDir(ref))
	if err != nil {
		return Status{}, ingestErr(ref, err)
	}
	if st.Ref != ref {
		return Status{}, fmt.Errorf("ingest %q: its folder names ref %q: %w", ref, truncate(st.Ref), errdefs.ErrFailedPrecondition)
	}
	return st, nil
}

// ListStatuses lists every ingest on disk (started and not yet committed or
// aborted), sorted by ref.
func (s *Store) ListStatuses(ctx context.Context) ([]Status, error) {
	entries, err := os.ReadDir(s.ingestRoot())
	if err != nil {
		return nil, fmt.Errorf("list ingests in %s: %w", s.ingestRoot(), err)
	}
	var out []Status
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		st, err := readStatus(filepath.Join(s.ingestRoot(), e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // being created or removed right now
		}
		if err != nil {
			return nil, fmt.Errorf("list ingests: %s: %w", e.Name(), err)
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// Abort removes ref's ingest; ErrNotFound when there is none, ErrLocked
// while a Writer holds it (close that Writer first).
func (s *Store) Abort(ctx context.Context, ref string) error {
	if err := checkRef(ref); err != nil {
		return err
	}
	dir, lock, err := s.lockIngest(ref, false)
	if err != nil {
		return fmt.Errorf("abort: %w", err)
	}
	return s.removeIngest(dir, lock)
}

func readStatus(dir string) (Status, error) {
	ref, err := os.ReadFile(filepath.Join(dir, fileRef))
	if err != nil {
		return Status{}, err
	}
	fi, err := os.Stat(filepath.Join(dir, fileData))
	if err != nil {
		return Status{}, err
	}
	m := readMeta(dir)
	st := Status{
		Ref:       string(ref),
		Offset:    fi.Size(),
		Total:     m.total,
		Expected:  m.expected,
		StartedAt: m.startedAt,
		UpdatedAt: m.updatedAt,
	}
	if st.UpdatedAt.IsZero() || fi.ModTime().After(st.UpdatedAt) {
		st.UpdatedAt = fi.ModTime()
	}
	return st, nil
}

// meta is the ingest's expectations and times as recorded in its folder.
// Unreadable values count as unknown: they are hints, and the checks at
// commit do not depend on them being present.
type meta struct {
	total     int64
	expected  digest.Digest
	startedAt time.Time
	updatedAt time.Time
}

func readMeta(dir string) meta {
	var m meta
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimSpace(string(b))
	}
	if n, err := strconv.ParseInt(read(fileTotal), 10, 64); err == nil && n > 0 {
		m.total = n
	}
	if d := digest.Digest(read(fileExpected)); d != "" && checkDigest(d) == nil {
		m.expected = d
	}
	m.startedAt, _ = time.Parse(time.RFC3339Nano, read(fileStartedAt))
	m.updatedAt, _ = time.Parse(time.RFC3339Nano, read(fileUpdatedAt))
	return m
}

// writeMetaFile replaces one small file of the ingest folder atomically, so
// a crash leaves either the old or the new value.
func writeMetaFile(dir, name, value string) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := writeSmallFile(tmp, value); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// writeSmallFile is os.WriteFile by plain syscalls: an *os.File of a
// regular file costs an epoll registration that fails and two fcntl
// round trips besides, each time, and an ingest writes five of these.
func writeSmallFile(path, value string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	b := []byte(value)
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return &os.PathError{Op: "write", Path: path, Err: err}
		}
		b = b[n:]
	}
	if err := unix.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// OpenIngest opens the data an ingest under ref holds so far, for reading
// while its writer stays open (call the writer's Digest first: it flushes).
// Nothing read this way is verified or committed: it is for work that
// checks what it reads itself and can be thrown away.
func (s *Store) OpenIngest(ref string) (*os.File, error) {
	f, err := os.Open(filepath.Join(s.ingestDir(ref), fileData))
	if err != nil {
		return nil, fmt.Errorf("open ingest %s: %w", ref, err)
	}
	return f, nil
}
