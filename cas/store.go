package cas

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/casfs/casfs/errdefs"
	"github.com/opencontainers/go-digest"
)

// Store is the blob store rooted at a casfs root directory. It keeps no
// state in memory besides the root, so any number of Stores (in any number
// of processes) may share one root: ingests are serialised by file locks
// and blobs appear by atomic rename.
type Store struct{ root string }

// Open creates <root>/blobs/sha256 and <root>/ingest when missing.
//
// Both are for their owner only (0700, also made so in a store an older
// casfs created): a layer blob holds every file of its layer, including
// those the image itself keeps from other users.
func Open(root string) (*Store, error) {
	if root == "" {
		return nil, fmt.Errorf("open content store: root is empty: %w", errdefs.ErrInvalidArgument)
	}
	s := &Store{root: filepath.Clean(root)}
	for _, dir := range []string{s.blobDir(), s.ingestRoot()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open content store %s: %w", s.root, err)
		}
	}
	for _, dir := range []string{filepath.Dir(s.blobDir()), s.ingestRoot()} {
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm() != 0o700 {
			if err := os.Chmod(dir, 0o700); err != nil {
				slog.Warn("cannot make a store folder private", "dir", dir, "err", err)
			}
		}
	}
	s.removeTrash()
	s.removeStaleBatches()
	return s, nil
}

// Root is the directory the store was opened at.
func (s *Store) Root() string { return s.root }

func (s *Store) blobDir() string    { return filepath.Join(s.root, "blobs", "sha256") }
func (s *Store) ingestRoot() string { return filepath.Join(s.root, "ingest") }

// ingestDir names a ref's ingest folder by the hash of the ref, so that a
// ref can be any string without ever becoming a path.
func (s *Store) ingestDir(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(s.ingestRoot(), hex.EncodeToString(sum[:]))
}

func (s *Store) blobPath(dgst digest.Digest) string {
	return filepath.Join(s.blobDir(), dgst.Encoded())
}

// BlobPath is where the blob with dgst lives (or would live once
// committed); it does not check that the blob exists.
func (s *Store) BlobPath(dgst digest.Digest) (string, error) {
	if err := checkDigest(dgst); err != nil {
		return "", err
	}
	return s.blobPath(dgst), nil
}

// Info describes a committed blob; ErrNotFound when it is absent.
func (s *Store) Info(ctx context.Context, dgst digest.Digest) (Info, error) {
	if err := checkDigest(dgst); err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(s.blobPath(dgst))
	if err != nil {
		return Info{}, blobErr(dgst, err)
	}
	return Info{Digest: dgst, Size: fi.Size(), CreatedAt: fi.ModTime()}, nil
}

// blobReader is a committed blob opened for reading.
type blobReader struct {
	*os.File
	size int64
}

func (r *blobReader) Size() int64 { return r.size }

// ReaderAt opens a committed blob; ErrNotFound when it is absent.
func (s *Store) ReaderAt(ctx context.Context, dgst digest.Digest) (ReaderAt, error) {
	if err := checkDigest(dgst); err != nil {
		return nil, err
	}
	f, err := os.Open(s.blobPath(dgst))
	if err != nil {
		return nil, blobErr(dgst, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, blobErr(dgst, err)
	}
	return &blobReader{File: f, size: fi.Size()}, nil
}

// Walk calls fn for every committed blob in digest order, skipping files
// whose names are not sha256 digests. An error from fn stops the walk and
// is returned as is.
func (s *Store) Walk(ctx context.Context, fn func(Info) error) error {
	entries, err := os.ReadDir(s.blobDir()) // sorted by name, hence by digest
	if err != nil {
		return fmt.Errorf("walk blobs in %s: %w", s.blobDir(), err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		dgst := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if !e.Type().IsRegular() || dgst.Validate() != nil {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since the listing
		}
		if err != nil {
			return fmt.Errorf("walk blobs: %w", blobErr(dgst, err))
		}
		if err := fn(Info{Digest: dgst, Size: fi.Size(), CreatedAt: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes a committed blob; ErrNotFound when it is absent.
func (s *Store) Delete(ctx context.Context, dgst digest.Digest) error {
	if err := checkDigest(dgst); err != nil {
		return err
	}
	if err := os.Remove(s.blobPath(dgst)); err != nil {
		return fmt.Errorf("delete: %w", blobErr(dgst, err))
	}
	return nil
}

// Verify re-hashes a committed blob; an error wrapping ErrDigestMismatch
// when its bytes no longer match its name, ErrNotFound when it is absent.
func (s *Store) Verify(ctx context.Context, dgst digest.Digest) error {
	if err := checkDigest(dgst); err != nil {
		return err
	}
	f, err := os.Open(s.blobPath(dgst))
	if err != nil {
		return fmt.Errorf("verify: %w", blobErr(dgst, err))
	}
	defer f.Close()
	h := sha256.New()
	buf := getChunk(-1)
	defer putChunk(buf)
	if _, err := io.CopyBuffer(h, ctxReader{ctx, f}, buf.buf); err != nil {
		return fmt.Errorf("verify blob %s: %w", dgst, err)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != dgst {
		return fmt.Errorf("verify blob %s: content hashes to %s: %w", dgst, got, errdefs.ErrDigestMismatch)
	}
	return nil
}

// ctxReader stops a long read loop once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func blobErr(dgst digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", dgst, errdefs.ErrNotFound)
	}
	return fmt.Errorf("blob %s: %w", dgst, err)
}

// removeTrash deletes ingest folders left behind by a crash in the middle
// of their removal (see removeIngest).
func (s *Store) removeTrash() {
	entries, err := os.ReadDir(s.ingestRoot())
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), trashPrefix) {
			_ = os.RemoveAll(filepath.Join(s.ingestRoot(), e.Name()))
		}
	}
}
