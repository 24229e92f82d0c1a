package cas

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/casfs/casfs/errdefs"
	"github.com/opencontainers/go-digest"
)

// Copy writes r into w and commits it, resuming at w's offset: a reader
// that is an io.Seeker is seeked, any other has the first offset bytes
// discarded (the caller re-sends the whole stream, as ctr does).
//
// A stream that ends before size bytes (when size > 0) returns an error
// wrapping io.ErrUnexpectedEOF and keeps the ingest for a later resume.
// Content that is already in the store is success: Commit's ErrExists is
// swallowed, as containerd's content.Copy does, and the ingest is gone.
// Copy does not close w.
func Copy(ctx context.Context, w Writer, r io.Reader, size int64, expected digest.Digest) error {
	st, err := w.Status()
	if err != nil {
		return fmt.Errorf("copy: ingest status: %w", err)
	}
	ref, off := st.Ref, st.Offset
	if size > 0 && off > size {
		// More than the whole blob: it cannot be a prefix of it.
		if err := w.Truncate(0); err != nil {
			return fmt.Errorf("copy to ingest %q: %w", ref, err)
		}
		off = 0
	}
	if off > 0 {
		if err := skip(ctx, r, off); err != nil {
			return fmt.Errorf("copy to ingest %q: resume at %d: %w", ref, off, err)
		}
	}
	n, err := copyInto(ctx, w, r)
	if err != nil {
		return fmt.Errorf("copy to ingest %q: %w", ref, err)
	}
	if size > 0 && off+n < size {
		return fmt.Errorf("copy to ingest %q: stream ended after %d of %d bytes: %w", ref, off+n, size, io.ErrUnexpectedEOF)
	}
	if err := w.Commit(ctx, size, expected); err != nil {
		if errors.Is(err, errdefs.ErrExists) {
			return nil
		}
		return fmt.Errorf("copy: %w", err)
	}
	return nil
}

// skip moves r past the first off bytes of the stream: by seeking when it
// can, by reading and dropping them otherwise (a pipe is an *os.File, an
// io.Seeker whose Seek fails).
func skip(ctx context.Context, r io.Reader, off int64) error {
	if s, ok := r.(io.Seeker); ok {
		if pos, err := s.Seek(off, io.SeekStart); err == nil && pos == off {
			return nil
		}
	}
	buf := getChunk()
	defer putChunk(buf)
	n, err := io.CopyBuffer(io.Discard, io.LimitReader(ctxReader{ctx, r}, off), buf.buf)
	if err != nil {
		return err
	}
	if n < off {
		return fmt.Errorf("stream ended after %d bytes, before the %d already ingested: %w", n, off, io.ErrUnexpectedEOF)
	}
	return nil
}

// copyInto reads r to its end into w, by our writer's ReadFrom when it is
// one and through a large buffer otherwise.
func copyInto(ctx context.Context, w Writer, r io.Reader) (int64, error) {
	if ours, ok := w.(*writer); ok {
		return ours.readFrom(ctx, r)
	}
	buf := getChunk()
	defer putChunk(buf)
	return io.CopyBuffer(onlyWriter{w}, ctxReader{ctx, r}, buf.buf)
}

// onlyWriter hides any ReadFrom of the Writer so that CopyBuffer uses buf.
type onlyWriter struct{ io.Writer }
