package cas

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

const (
	stateOpen int32 = iota
	stateClosed
	stateCommitted
)

// writer is an ingest held under its ref's lock. Status is safe to call
// from any goroutine at any time (for progress); the other methods take mu.
type writer struct {
	s         *Store
	ref       string
	dir       string
	lock      *os.File
	data      *os.File
	total     int64
	expected  digest.Digest
	startedAt time.Time

	keepOnNoSpace bool

	offset    atomic.Int64 // bytes accepted, including the chunk being filled
	updatedAt atomic.Int64 // unix nanoseconds of the last change
	state     atomic.Int32

	mu   sync.Mutex
	pipe *pipeline
	cur  *chunk // chunk being filled, nil when none
}

var _ io.ReaderFrom = (*writer)(nil)

// Writer opens (or resumes) the ingest for ref, taking its lock; a second
// holder gets an error wrapping errdefs.ErrLocked that names the ref.
//
// Resuming re-hashes the data already on disk and continues after it. When
// opts conflict with the expectations recorded by an earlier writer for the
// same ref (another digest or size), that earlier data cannot be a prefix
// of this content, so the ingest starts over.
func (s *Store) Writer(ctx context.Context, ref string, opts WriterOpts) (Writer, error) {
	if err := checkRef(ref); err != nil {
		return nil, err
	}
	if opts.Expected != "" {
		if err := checkDigest(opts.Expected); err != nil {
			return nil, fmt.Errorf("ingest %q: expected %w", ref, err)
		}
	}
	if opts.Total < 0 {
		return nil, fmt.Errorf("ingest %q: total %d is negative: %w", ref, opts.Total, errdefs.ErrInvalidArgument)
	}
	if opts.Expected != "" {
		// As containerd: content known by digest and stored is not
		// written again; the caller takes ErrExists as done.
		if _, err := os.Lstat(s.blobPath(opts.Expected)); err == nil {
			return nil, fmt.Errorf("ingest %q: blob %s: %w", ref, opts.Expected, errdefs.ErrExists)
		}
	}
	dir, lock, err := s.lockIngest(ref, true)
	if err != nil {
		return nil, err
	}
	w, err := s.openIngest(ctx, ref, dir, lock, opts)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return w, nil
}

func (s *Store) openIngest(ctx context.Context, ref, dir string, lock *os.File, opts WriterOpts) (*writer, error) {
	recorded, err := os.ReadFile(filepath.Join(dir, fileRef))
	fresh := err != nil || string(recorded) != ref
	m := readMeta(dir)
	if !fresh && ((opts.Expected != "" && m.expected != "" && opts.Expected != m.expected) ||
		(opts.Total > 0 && m.total > 0 && opts.Total != m.total)) {
		slog.Info("ingest restarted: its expected content changed", "ref", ref,
			"was", m.expected, "wasSize", m.total, "now", opts.Expected, "nowSize", opts.Total)
		fresh = true
	}
	w := &writer{s: s, ref: ref, dir: dir, lock: lock, keepOnNoSpace: opts.KeepOnNoSpace}
	if fresh {
		w.data, err = startIngest(dir, ref, opts)
		if err != nil {
			return nil, fmt.Errorf("start ingest %q: %w", ref, err)
		}
		w.total, w.expected, w.startedAt = opts.Total, opts.Expected, time.Now()
		m.startedAt = w.startedAt
	} else {
		if opts.Total > 0 && m.total == 0 {
			m.total = opts.Total
			if err := writeMetaFile(dir, fileTotal, strconv.FormatInt(m.total, 10)); err != nil {
				return nil, fmt.Errorf("resume ingest %q: %w", ref, err)
			}
		}
		if opts.Expected != "" && m.expected == "" {
			m.expected = opts.Expected
			if err := writeMetaFile(dir, fileExpected, m.expected.String()); err != nil {
				return nil, fmt.Errorf("resume ingest %q: %w", ref, err)
			}
		}
		w.total, w.expected, w.startedAt = m.total, m.expected, m.startedAt
		if w.data, err = openData(dir); err != nil {
			return nil, fmt.Errorf("resume ingest %q: %w", ref, err)
		}
	}
	h := sha256.New()
	var n int64
	if !fresh {
		// A plain re-hash of what is there: it also covers data written
		// by a process that died before it could record anything. (A
		// fresh ingest's data was just truncated: nothing to read, and no
		// buffer to allocate for each of a pull's many small blobs.)
		buf := getChunk(-1)
		n, err = io.CopyBuffer(h, ctxReader{ctx, w.data}, buf.buf)
		putChunk(buf)
		if err != nil {
			w.data.Close()
			return nil, fmt.Errorf("resume ingest %q: %w", ref, err)
		}
	}
	w.offset.Store(n)
	// A resumed ingest was last updated by its last write, not now.
	updated := time.Now()
	if !fresh && !m.updatedAt.IsZero() {
		updated = m.updatedAt
	}
	w.updatedAt.Store(updated.UnixNano())
	w.pipe = newPipeline(h, w.data)
	return w, nil
}

// startIngest (re)initialises an ingest folder. The ref file goes first
// out and last in, so that a crash in between leaves a folder that the
// next writer starts afresh.
func startIngest(dir, ref string, opts WriterOpts) (*os.File, error) {
	if err := os.Remove(filepath.Join(dir, fileRef)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	now := formatTime(time.Now())
	values := map[string]string{fileStartedAt: now, fileUpdatedAt: now}
	if opts.Total > 0 {
		values[fileTotal] = strconv.FormatInt(opts.Total, 10)
	}
	if opts.Expected != "" {
		values[fileExpected] = opts.Expected.String()
	}
	for _, name := range []string{fileTotal, fileExpected, fileStartedAt, fileUpdatedAt} {
		var err error
		if v, ok := values[name]; ok {
			err = writeMetaFile(dir, name, v)
		} else if err = os.Remove(filepath.Join(dir, name)); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
		if err != nil {
			return nil, err
		}
	}
	path := filepath.Join(dir, fileData)
	_ = os.Chmod(path, 0o644) // in case a crash left it read-only mid-commit
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	if err := writeMetaFile(dir, fileRef, ref); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func openData(dir string) (*os.File, error) {
	path := filepath.Join(dir, fileData)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, fs.ErrPermission) {
		// A crash between the chmod and the rename of a commit.
		if err := os.Chmod(path, 0o644); err != nil {
			return nil, err
		}
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	}
	return f, err
}

func (w *writer) usable() error {
	switch w.state.Load() {
	case stateClosed:
		return fmt.Errorf("ingest %q: writer is closed: %w", w.ref, errdefs.ErrFailedPrecondition)
	case stateCommitted:
		return fmt.Errorf("ingest %q: writer is committed: %w", w.ref, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// fill returns the chunk to copy into, stamped with its file offset.
func (w *writer) fill() *chunk {
	if w.cur == nil {
		want := int64(-1) // unknown, or more than the ingest declared
		if rest := w.total - w.offset.Load(); w.total > 0 && rest > 0 {
			want = rest
		}
		w.cur = w.pipe.get(want)
	}
	if w.cur.n == 0 {
		w.cur.off = w.offset.Load()
	}
	return w.cur
}

// advance records m more bytes in the current chunk and sends it on when
// full.
func (w *writer) advance(m int) {
	w.cur.n += m
	w.offset.Add(int64(m))
	if w.cur.n == len(w.cur.buf) {
		w.pipe.submit(w.cur)
		w.cur = nil
	}
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		if err := w.pipe.failed(); err != nil {
			return n, w.writeErr(err)
		}
		c := w.fill()
		m := copy(c.buf[c.n:], p)
		p = p[m:]
		n += m
		w.advance(m)
	}
	w.updatedAt.Store(time.Now().UnixNano())
	return n, nil
}

// ReadFrom reads r to its end straight into the chunks, saving the copy
// that Write has to make.
func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	return w.readFrom(context.Background(), r)
}

func (w *writer) readFrom(ctx context.Context, r io.Reader) (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return 0, err
	}
	defer func() { w.updatedAt.Store(time.Now().UnixNano()) }()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if err := w.pipe.failed(); err != nil {
			return n, w.writeErr(err)
		}
		c := w.fill()
		m, err := r.Read(c.buf[c.n:])
		if m < 0 || m > len(c.buf)-c.n {
			return n, fmt.Errorf("ingest %q: reader returned a bad count %d", w.ref, m)
		}
		n += int64(m)
		w.advance(m)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func (w *writer) writeErr(err error) error {
	return fmt.Errorf("ingest %q: write data: %w", w.ref, err)
}

// flush brings the data file and the hash up to everything accepted.
func (w *writer) flush() error {
	if w.cur != nil {
		if err := w.pipe.writeInline(w.cur); err != nil {
			return w.writeErr(err)
		}
		return nil
	}
	if err := w.pipe.wait(); err != nil {
		return w.writeErr(err)
	}
	return nil
}

// Digest is the digest of everything written so far.
func (w *writer) Digest() digest.Digest {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state.Load() == stateOpen {
		_ = w.flush() // a failed write surfaces at Commit or Close
	}
	return digest.NewDigest(digest.SHA256, w.pipe.hash)
}

// Status reports what the writer has accepted so far.
func (w *writer) Status() (Status, error) {
	return Status{
		Ref:       w.ref,
		Offset:    w.offset.Load(),
		Total:     w.total,
		Expected:  w.expected,
		StartedAt: w.startedAt,
		UpdatedAt: time.Unix(0, w.updatedAt.Load()),
	}, nil
}

// Truncate sets the ingest back to size bytes; sizes between 0 and the
// offset re-hash the bytes kept. It also clears an earlier write error.
func (w *writer) Truncate(size int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	flushErr := w.flush()
	off := w.offset.Load()
	if size < 0 || size > off {
		return fmt.Errorf("ingest %q: cannot truncate to %d bytes, it holds %d: %w", w.ref, size, off, errdefs.ErrInvalidArgument)
	}
	if size == off && flushErr == nil {
		return nil
	}
	if err := w.data.Truncate(size); err != nil {
		return fmt.Errorf("ingest %q: truncate: %w", w.ref, err)
	}
	w.pipe.hash.Reset()
	if size > 0 {
		if _, err := io.CopyBuffer(w.pipe.hash, io.NewSectionReader(w.data, 0, size), make([]byte, 256<<10)); err != nil {
			return fmt.Errorf("ingest %q: re-hash after truncate: %w", w.ref, err)
		}
	}
	w.pipe.reset()
	w.offset.Store(size)
	now := time.Now()
	w.updatedAt.Store(now.UnixNano())
	_ = writeMetaFile(w.dir, fileUpdatedAt, formatTime(now))
	return nil
}

// Commit checks size and digest, then makes the data durable and visible
// under blobs/ in one rename.
func (w *writer) Commit(ctx context.Context, size int64, expected digest.Digest) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	// As containerd: Commit ends the writer whatever happens; a failed
	// commit keeps the ingest on disk for a new writer to resume or abort.
	defer func() {
		if w.state.Load() == stateOpen {
			_ = w.closeLocked()
		}
	}()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit ingest %q: %w", w.ref, err)
	}
	if expected != "" {
		if err := checkDigest(expected); err != nil {
			return fmt.Errorf("commit ingest %q: expected %w", w.ref, err)
		}
	}
	if err := w.flush(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	off := w.offset.Load()
	for _, want := range []int64{size, w.total} {
		if want > 0 && want != off {
			return fmt.Errorf("commit ingest %q: it holds %d bytes, expected %d: %w", w.ref, off, want, errdefs.ErrFailedPrecondition)
		}
	}
	actual := digest.NewDigest(digest.SHA256, w.pipe.hash)
	for _, want := range []digest.Digest{expected, w.expected} {
		if want != "" && want != actual {
			return fmt.Errorf("commit ingest %q: content is %s, expected %s: %w: %w", w.ref, actual, want, errdefs.ErrFailedPrecondition, errdefs.ErrDigestMismatch)
		}
	}
	target := w.s.blobPath(actual)
	if _, err := os.Lstat(target); err == nil {
		w.finish(stateCommitted)
		if err := w.s.removeIngest(w.dir, w.lock); err != nil {
			slog.Warn("committed content existed; could not remove its ingest", "ref", w.ref, "err", err)
		}
		return fmt.Errorf("commit ingest %q: blob %s: %w", w.ref, actual, errdefs.ErrExists)
	}
	if err := unix.Fdatasync(int(w.data.Fd())); err != nil {
		return fmt.Errorf("commit ingest %q: sync data: %w", w.ref, err)
	}
	if err := w.data.Chmod(0o444); err != nil {
		return fmt.Errorf("commit ingest %q: %w", w.ref, err)
	}
	if err := os.Rename(filepath.Join(w.dir, fileData), target); err != nil {
		_ = w.data.Chmod(0o644)
		return fmt.Errorf("commit ingest %q: move into blobs: %w", w.ref, err)
	}
	// The blob exists once the rename is on disk; until then a crash could
	// lose it while the caller already recorded it.
	syncErr := syncDir(w.s.blobDir())
	w.finish(stateCommitted)
	if err := w.s.removeIngest(w.dir, w.lock); err != nil {
		slog.Warn("blob committed; could not remove its ingest", "ref", w.ref, "digest", actual, "err", err)
	}
	if syncErr != nil {
		return fmt.Errorf("commit ingest %q: sync %s: %w", w.ref, w.s.blobDir(), syncErr)
	}
	return nil
}

// finish stops the goroutines and closes the data file; the caller deals
// with the lock.
func (w *writer) finish(state int32) {
	w.pipe.stop()
	if w.cur != nil {
		putChunk(w.cur)
		w.cur = nil
	}
	w.data.Close()
	w.state.Store(state)
}

// Close writes out what is buffered and releases the ref's lock; the ingest
// stays on disk for a later writer to resume, unless writing it ran out of
// space: then it is removed (keeping it would keep the disk full), unless
// WriterOpts.KeepOnNoSpace asked to keep it. Closing a committed or closed
// writer does nothing.
func (w *writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state.Load() != stateOpen {
		return nil
	}
	return w.closeLocked()
}

// closeLocked is Close with w.mu held.
func (w *writer) closeLocked() error {
	err := w.flush()
	noSpace := errors.Is(w.pipe.failed(), syscall.ENOSPC)
	w.finish(stateClosed)
	if noSpace && !w.keepOnNoSpace {
		slog.Info("ingest removed: the filesystem is full", "ref", w.ref, "bytes", w.offset.Load())
		// The write error was the caller's already; nothing is kept.
		return w.s.removeIngest(w.dir, w.lock)
	}
	_ = writeMetaFile(w.dir, fileUpdatedAt, formatTime(time.Unix(0, w.updatedAt.Load())))
	w.lock.Close()
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
