package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
)

// readBlobRange fills p with the bytes at off of a blob the store knows,
// with one HTTP Range request to the registries it came from (mirrors
// first, as for whole blobs). Nothing is stored: the caller verifies what
// it keeps (lazy layers check each chunk against its table of contents).
// The caller owns p, so that buffers can be reused across requests.
func (f *op) readBlobRange(ctx context.Context, dgst digest.Digest, off int64, p []byte) error {
	n := int64(len(p))
	k, err := f.rec.Lookup(ctx, dgst)
	if err != nil {
		return fmt.Errorf("blob %s: %w", dgst, err)
	}
	if off < 0 || n <= 0 || off+n > k.Desc.Size {
		return fmt.Errorf("blob %s: range %d+%d outside its %d bytes: %w", dgst, off, n, k.Desc.Size, errdefs.ErrInvalidArgument)
	}
	if len(k.Sources) == 0 {
		return fmt.Errorf("blob %s: no registry source recorded to fetch it from: %w", dgst, errdefs.ErrNotFound)
	}
	var errs []error
	for _, s := range k.Sources {
		src, err := f.source(s.Host, s.Repo)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if f.readRangeFrom(ctx, src, dgst, off, p, &errs) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("blob %s: %w", dgst, ctx.Err())
		}
	}
	return fmt.Errorf("blob %s bytes %d-%d: %w", dgst, off, off+n-1, joinErrors(errs))
}

// readRangeFrom fills p with the bytes at off of blob dgst from the
// endpoints of src in turn, until one answers; it reports whether one did,
// and adds the errors of those that failed to errs. It stops when ctx ends.
func (f *op) readRangeFrom(ctx context.Context, src source, dgst digest.Digest, off int64, p []byte, errs *[]error) bool {
	for _, ep := range src.eps {
		err := f.readRange(ctx, ep, src.Repo, dgst, off, p)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		slog.Debug("blob range fetch failed", "digest", dgst, "endpoint", ep.String(), "err", err)
		*errs = append(*errs, fmt.Errorf("%s: %w", ep, classify(err)))
	}
	return false
}

func (f *op) readRange(ctx context.Context, ep hostEndpoint, repo string, dgst digest.Digest, off int64, p []byte) error {
	n := int64(len(p))
	body, start, err := f.getBlob(ctx, ep, repo, dgst, off, off+n-1)
	if err != nil {
		return err
	}
	defer body.Close()
	if start != off {
		// A registry without Range support: skip to the part we want.
		slog.Debug("registry ignored Range, reading up to the range", "digest", dgst, "endpoint", ep.String())
		if _, err := io.CopyN(io.Discard, body, off); err != nil {
			return err
		}
	}
	if _, err := io.ReadFull(body, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("GET %s/v2/%s/blobs/%s bytes %d-%d: %w", ep.URL.Redacted(), repo, dgst, off, off+n-1, err)
	}
	return nil
}
