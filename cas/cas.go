// Package cas stores blobs by digest on disk, the way containerd's local
// content store does: writes go to ingest/<sha256(ref)>/ and become visible
// under blobs/sha256/<hex> only by an fsync'd rename once size and digest
// have been checked.
package cas

import (
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// Info describes a committed blob.
type Info struct {
	Digest    digest.Digest
	Size      int64
	CreatedAt time.Time // file mtime of the blob
}

// Status describes an in-progress ingest.
type Status struct {
	Ref       string
	Offset    int64
	Total     int64         // expected size, 0 when unknown
	Expected  digest.Digest // expected digest, "" when unknown
	StartedAt time.Time
	UpdatedAt time.Time
}

// ReaderAt reads a committed blob.
type ReaderAt interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// WriterOpts are the optional expectations of a new or resumed ingest.
type WriterOpts struct {
	Expected digest.Digest // "" when unknown
	Total    int64         // 0 when unknown
	// KeepOnNoSpace keeps an ingest whose writes ran out of space for a
	// later resume; by default Close removes it, so the disk is not left full.
	KeepOnNoSpace bool
}

// Writer is an open ingest. It holds the ref's lock until Close or Commit.
// Opening one with an expected digest that is already stored fails with
// errdefs.ErrExists (containerd's ErrAlreadyExists).
type Writer interface {
	io.WriteCloser
	// Digest is the digest of everything written so far.
	Digest() digest.Digest
	// Status reports offset, total and times.
	Status() (Status, error)
	// Truncate sets the ingest back to size bytes (only 0 or the current
	// offset are required to be supported cheaply; others re-hash).
	Truncate(size int64) error
	// Commit checks size (when > 0) and expected digest (when != ""),
	// then fsyncs and renames into blobs/. It always ends the writer, as
	// containerd's does: a mismatch returns an error wrapping
	// errdefs.ErrFailedPrecondition and leaves the ingest on disk for a new
	// writer (or Abort). Content that exists already returns
	// errdefs.ErrExists and removes the ingest.
	Commit(ctx context.Context, size int64, expected digest.Digest) error
}
