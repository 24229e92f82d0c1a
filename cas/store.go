package cas

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
)

// Store is the blob store rooted at a casfs root directory.
// STUB: signatures are the contract; bodies are being written.
type Store struct{ root string }

// Open creates <root>/blobs/sha256 and <root>/ingest when missing.
func Open(root string) (*Store, error) { panic("TODO") }

func (s *Store) Root() string { return s.root }

// Writer opens (or resumes) the ingest for ref, taking its lock; a second
// holder gets an error wrapping errdefs.ErrLocked that names the ref.
func (s *Store) Writer(ctx context.Context, ref string, opts WriterOpts) (Writer, error) {
	panic("TODO")
}
func (s *Store) Status(ctx context.Context, ref string) (Status, error)     { panic("TODO") }
func (s *Store) ListStatuses(ctx context.Context) ([]Status, error)         { panic("TODO") }
func (s *Store) Abort(ctx context.Context, ref string) error                { panic("TODO") }
func (s *Store) Info(ctx context.Context, dgst digest.Digest) (Info, error) { panic("TODO") }
func (s *Store) ReaderAt(ctx context.Context, dgst digest.Digest) (ReaderAt, error) {
	panic("TODO")
}
func (s *Store) BlobPath(dgst digest.Digest) (string, error)          { panic("TODO") }
func (s *Store) Walk(ctx context.Context, fn func(Info) error) error  { panic("TODO") }
func (s *Store) Delete(ctx context.Context, dgst digest.Digest) error { panic("TODO") }
func (s *Store) Verify(ctx context.Context, dgst digest.Digest) error { panic("TODO") }

// Copy writes r into w and commits it, resuming at w's offset: a reader
// that is an io.Seeker is seeked, any other has the first offset bytes
// discarded (the caller re-sends the whole stream, as ctr does).
func Copy(ctx context.Context, w Writer, r io.Reader, size int64, expected digest.Digest) error {
	panic("TODO")
}
