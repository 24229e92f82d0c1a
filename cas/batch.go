package cas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/errdefs"
)

// batchPrefix marks a folder under ingest/ that stages a Batch.
const batchPrefix = ".batch-"

// Batch stages many blobs that become visible together: each is written and
// verified into a private folder, and Commit syncs the filesystem once and
// renames them all. Imports use it, both so that a bad archive leaves the
// store unchanged and so that 100k small blobs do not cost 100k fsyncs.
// A Batch is not resumable and not safe for concurrent use.
type Batch struct {
	s     *Store
	dir   string
	lock  *os.File
	blobs map[digest.Digest]int64
}

// NewBatch starts a batch. Its folder is locked while it lives, so Open in
// another process never removes a batch in use.
func (s *Store) NewBatch() (*Batch, error) {
	dir, err := os.MkdirTemp(s.ingestRoot(), batchPrefix)
	if err != nil {
		return nil, fmt.Errorf("start batch: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start batch: %w", err)
	}
	return &Batch{s: s, dir: dir, lock: lock, blobs: map[digest.Digest]int64{}}, nil
}

// Add writes r into the batch and checks it against expected and size
// (size < 0: unknown). Content already in the store or in the batch is
// read through and not staged again.
func (b *Batch) Add(ctx context.Context, r io.Reader, expected digest.Digest, size int64) error {
	if err := checkDigest(expected); err != nil {
		return err
	}
	if _, ok := b.blobs[expected]; ok {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	f, err := os.OpenFile(filepath.Join(b.dir, expected.Encoded()), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("stage %s: %w", expected, err)
	}
	v := expected.Verifier()
	n, err := io.CopyBuffer(io.MultiWriter(f, v), ctxReader{ctx, r}, make([]byte, 1<<20))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return fmt.Errorf("stage %s: %w", expected, err)
	case size >= 0 && n != size:
		return fmt.Errorf("stage %s: %d bytes, expected %d: %w", expected, n, size, errdefs.ErrFailedPrecondition)
	case !v.Verified():
		return fmt.Errorf("stage %s: content does not match its digest: %w", expected, errdefs.ErrDigestMismatch)
	}
	b.blobs[expected] = n
	return nil
}

// AddBytes is Add for content the caller holds in memory: one write, no
// copy through a buffer (a lazy pull stores its TOCs, megabytes of JSON,
// while the first read of the image waits).
func (b *Batch) AddBytes(ctx context.Context, p []byte, expected digest.Digest) error {
	if err := checkDigest(expected); err != nil {
		return err
	}
	if got := expected.Algorithm().FromBytes(p); got != expected {
		return fmt.Errorf("stage %s: content is %s: %w", expected, got, errdefs.ErrDigestMismatch)
	}
	return b.AddVerifiedBytes(ctx, p, expected)
}

// AddVerifiedBytes is AddBytes for content the caller has just verified
// against expected itself: it is not hashed again. A lazy pull's TOCs are
// verified as they are opened, and a second sha256 of their megabytes
// competed with the TOCs' decode for the cores while the first read waited
// (on a CPU without SHA instructions, 200 MiB/s).
func (b *Batch) AddVerifiedBytes(ctx context.Context, p []byte, expected digest.Digest) error {
	if err := checkDigest(expected); err != nil {
		return err
	}
	if _, ok := b.blobs[expected]; ok {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(b.dir, expected.Encoded()), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("stage %s: %w", expected, err)
	}
	_, err = f.Write(p)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("stage %s: %w", expected, err)
	}
	b.blobs[expected] = int64(len(p))
	return nil
}

// Commit makes every staged blob visible and returns their digests.
func (b *Batch) Commit(ctx context.Context) ([]digest.Digest, error) {
	return b.commit(ctx, true)
}

// CommitUnsynced is Commit without syncing the filesystem: for blobs
// derived from verified data that can be fetched again (eStargz TOCs),
// which a crash may lose or leave short; check reports such a blob.
func (b *Batch) CommitUnsynced(ctx context.Context) ([]digest.Digest, error) {
	return b.commit(ctx, false)
}

func (b *Batch) commit(ctx context.Context, sync bool) ([]digest.Digest, error) {
	defer b.Abort()
	if len(b.blobs) == 0 {
		return nil, nil
	}
	// One syncfs instead of one fdatasync per blob.
	if sync {
		if err := unix.Syncfs(int(b.lock.Fd())); err != nil {
			return nil, fmt.Errorf("commit batch: sync: %w", err)
		}
	}
	var done []digest.Digest
	for d := range b.blobs {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		src := filepath.Join(b.dir, d.Encoded())
		if err := os.Chmod(src, 0o444); err != nil {
			return done, fmt.Errorf("commit batch: %w", err)
		}
		target := b.s.blobPath(d)
		if _, err := os.Lstat(target); err == nil {
			continue
		}
		if err := os.Rename(src, target); err != nil {
			return done, fmt.Errorf("commit batch: move %s into blobs: %w", d, err)
		}
		done = append(done, d)
	}
	if !sync {
		return done, nil
	}
	if err := syncDir(b.s.blobDir()); err != nil {
		return done, fmt.Errorf("commit batch: sync %s: %w", b.s.blobDir(), err)
	}
	return done, nil
}

// Abort drops whatever is staged and not committed. Safe to call twice.
func (b *Batch) Abort() {
	if b.lock == nil {
		return
	}
	os.RemoveAll(b.dir)
	b.lock.Close()
	b.lock = nil
}

// removeStaleBatches deletes batch folders whose owner is gone (their lock
// is free): left by a process that died mid-import.
func (s *Store) removeStaleBatches() {
	entries, err := os.ReadDir(s.ingestRoot())
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), batchPrefix) {
			continue
		}
		dir := filepath.Join(s.ingestRoot(), e.Name())
		f, err := os.Open(filepath.Join(dir, "lock"))
		if errors.Is(err, os.ErrNotExist) {
			// Between creating its folder and its lock a live batch has no
			// lock file for an instant: only an old such folder is stale.
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Minute {
				os.RemoveAll(dir)
			}
			continue
		}
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			os.RemoveAll(dir)
		}
		f.Close()
	}
}
