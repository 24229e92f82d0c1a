package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TeeWriter receives a copy of a blob as it downloads (an *io.PipeWriter is one).
type TeeWriter interface {
	io.Writer
	// CloseWithError ends the copy: nil once the blob is committed with its
	// digest checked, an error when the copy stopped short or is not to be
	// trusted. It may be called while a Write blocks, from another
	// goroutine, and must make that Write return: that is how a cancelled
	// fetch frees a download stuck writing to a reader that went quiet.
	CloseWithError(err error) error
}

// errTeeStopped ends a tee whose download restarted, failed or was cancelled:
// what the reader got so far is not the whole blob.
var errTeeStopped = errors.New("blob copy stopped before the blob was complete")

// onceTee closes its TeeWriter once, so that fetchBlob can end a copy that
// no download of this call fed (the blob was present, or another
// operation's download brought it) without knowing whether one did.
type onceTee struct {
	w    TeeWriter
	once sync.Once
}

func (t *onceTee) Write(p []byte) (int, error) { return t.w.Write(p) }

func (t *onceTee) CloseWithError(err error) error {
	var r error
	t.once.Do(func() { r = t.w.CloseWithError(err) })
	return r
}

// teeCopy forwards downloaded bytes to a TeeWriter while they follow on
// from each other. A download that resumes at the offset the copy reached
// keeps it going; one that starts over stops it. A failing writer is
// dropped: the download itself never depends on the copy.
type teeCopy struct {
	w       TeeWriter
	size    int64
	pos     int64
	stopped bool
	// unwatch stops closing w when the fetch's context ends.
	unwatch func() bool
}

// startTee starts the copy of desc's download to the tee ctx carries. The
// copy is closed as soon as ctx ends, so that a Write blocked on a slow
// reader cannot keep the download (and the pull waiting for it) from ending.
func startTee(ctx context.Context, desc ocispec.Descriptor) *teeCopy {
	w := teeFrom(ctx)
	if w == nil {
		return nil
	}
	unwatch := context.AfterFunc(ctx, func() {
		_ = w.CloseWithError(fmt.Errorf("%w: %w", context.Cause(ctx), errTeeStopped))
	})
	return &teeCopy{w: w, size: desc.Size, unwatch: unwatch}
}

// at is told the offset a download continues from.
func (t *teeCopy) at(off int64) {
	if t != nil && !t.stopped && off != t.pos {
		t.stop(fmt.Errorf("download went on at byte %d, the copy was at %d: %w", off, t.pos, errTeeStopped))
	}
}

func (t *teeCopy) write(p []byte) {
	if t == nil || t.stopped || len(p) == 0 {
		return
	}
	n, err := t.w.Write(p)
	t.pos += int64(n)
	if err != nil {
		t.stopped = true // the reader went away; nothing to tell it
	}
}

func (t *teeCopy) stop(err error) {
	if t == nil || t.stopped {
		return
	}
	t.stopped = true
	_ = t.w.CloseWithError(err)
}

// finish ends the copy with the outcome of the whole fetch.
func (t *teeCopy) finish(err error) {
	if t != nil {
		t.unwatch()
	}
	if err != nil {
		// Both wrapped: the reader learns the copy is short and why (a
		// cancel reads as context.Canceled however the close was reached).
		t.stop(fmt.Errorf("%w: %w", err, errTeeStopped))
		return
	}
	if t == nil || t.stopped {
		return
	}
	if t.pos != t.size {
		// Committed without all of it passing here (another writer had it).
		t.stop(fmt.Errorf("copy has %d of %d bytes: %w", t.pos, t.size, errTeeStopped))
		return
	}
	t.stopped = true
	_ = t.w.CloseWithError(nil)
}
