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
// discarded (the caller re-sends the whole stream, as ctr does). Without
// an expected digest nothing at commit could tell a resumed ingest from
// two inputs joined together, so the bytes of r up to the offset are
// compared with the stored ones instead of skipped (see CopyResume).
//
// A stream that ends before size bytes (when size > 0) returns an error
// wrapping io.ErrUnexpectedEOF and keeps the ingest for a later resume.
// Content that is already in the store is success: Commit's ErrExists is
// swallowed, as containerd's content.Copy does, and the ingest is gone.
// Copy does not close w.
func Copy(ctx context.Context, w Writer, r io.Reader, size int64, expected digest.Digest) error {
	_, err := CopyResume(ctx, w, r, size, expected)
	return err
}

// Resume says how an ingest continued what was stored before: Stored bytes
// were found, the first Kept of them were the input's own. Kept < Stored
// means the input differed from what was stored (or ended inside it), and
// the ingest started over from byte Kept.
type Resume struct {
	Stored, Kept int64
}

// Restarted reports whether stored bytes were dropped as not the input's.
func (r Resume) Restarted() bool { return r.Kept < r.Stored }

// CopyResume is Copy, also reporting how it treated the stored bytes.
func CopyResume(ctx context.Context, w Writer, r io.Reader, size int64, expected digest.Digest) (Resume, error) {
	st, err := w.Status()
	if err != nil {
		return Resume{}, fmt.Errorf("copy: ingest status: %w", err)
	}
	ref, off := st.Ref, st.Offset
	res := Resume{Stored: off, Kept: off}
	if size > 0 && off > size {
		// More than the whole blob: it cannot be a prefix of it.
		if err := w.Truncate(0); err != nil {
			return res, fmt.Errorf("copy to ingest %q: %w", ref, err)
		}
		off, res.Kept = 0, 0
	}
	if off > 0 {
		ours, verify := w.(*writer)
		if verify && expected == "" {
			res.Kept, err = ours.matchPrefix(ctx, r, off)
		} else {
			err = skip(ctx, r, off)
		}
		if err != nil {
			return res, fmt.Errorf("copy to ingest %q: resume at %d: %w", ref, off, err)
		}
		off = res.Kept
	}
	n, err := copyInto(ctx, w, r)
	if err != nil {
		return res, fmt.Errorf("copy to ingest %q: %w", ref, err)
	}
	if size > 0 && off+n < size {
		return res, fmt.Errorf("copy to ingest %q: stream ended after %d of %d bytes: %w", ref, off+n, size, io.ErrUnexpectedEOF)
	}
	if err := w.Commit(ctx, size, expected); err != nil {
		if errors.Is(err, errdefs.ErrExists) {
			return res, nil
		}
		return res, fmt.Errorf("copy: %w", err)
	}
	return res, nil
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
	buf := getChunk(-1)
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
	buf := getChunk(-1)
	defer putChunk(buf)
	return io.CopyBuffer(onlyWriter{w}, ctxReader{ctx, r}, buf.buf)
}

// onlyWriter hides any ReadFrom of the Writer so that CopyBuffer uses buf.
type onlyWriter struct{ io.Writer }

// matchPrefix reads the first off bytes of r and compares them with the
// bytes stored. At the first difference (or an end of r before off) the
// ingest is cut back to the bytes that matched and the rest of what was
// read is written after them, so that the ingest holds exactly r's bytes.
// It returns how many stored bytes were kept.
func (w *writer) matchPrefix(ctx context.Context, r io.Reader, off int64) (int64, error) {
	w.mu.Lock()
	err := w.flush() // bytes accepted in this session must be on disk to compare
	w.mu.Unlock()
	if err != nil {
		return 0, err
	}
	in, stored := getChunk(-1), getChunk(-1)
	defer putChunk(in)
	defer putChunk(stored)
	src := ctxReader{ctx, r}
	var pos int64
	for pos < off {
		want := int64(len(in.buf))
		if rest := off - pos; rest < want {
			want = rest
		}
		n, err := io.ReadFull(src, in.buf[:want])
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return pos, err
		}
		if _, rerr := w.data.ReadAt(stored.buf[:n], pos); rerr != nil {
			return pos, fmt.Errorf("read stored bytes: %w", rerr)
		}
		same := 0
		for same < n && in.buf[same] == stored.buf[same] {
			same++
		}
		if same < n || int64(n) < want {
			kept := pos + int64(same)
			if terr := w.Truncate(kept); terr != nil {
				return pos, terr
			}
			if _, werr := w.Write(in.buf[same:n]); werr != nil {
				return kept, werr
			}
			return kept, nil
		}
		pos += int64(n)
	}
	return off, nil
}
