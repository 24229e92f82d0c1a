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

// readBlobRange reads the n bytes at off of a blob the store knows, with
// one HTTP Range request to the registries it came from (mirrors first, as
// for whole blobs). Nothing is stored: the caller verifies what it keeps
// (lazy layers check each chunk against its table of contents).
func (f *op) readBlobRange(ctx context.Context, dgst digest.Digest, off, n int64) ([]byte, error) {
	k, err := f.rec.Lookup(ctx, dgst)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", dgst, err)
	}
	if off < 0 || n <= 0 || off+n > k.Desc.Size {
		return nil, fmt.Errorf("blob %s: range %d+%d outside its %d bytes: %w", dgst, off, n, k.Desc.Size, errdefs.ErrInvalidArgument)
	}
	if len(k.Sources) == 0 {
		return nil, fmt.Errorf("blob %s: no registry source recorded to fetch it from: %w", dgst, errdefs.ErrNotFound)
	}
	var errs []error
	for _, s := range k.Sources {
		src, err := f.source(s.Host, s.Repo)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ep := range src.eps {
			b, err := f.readRange(ctx, ep, src.Repo, dgst, off, n)
			if err == nil {
				return b, nil
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("blob %s: %w", dgst, ctx.Err())
			}
			slog.Debug("blob range fetch failed", "digest", dgst, "endpoint", ep.String(), "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", ep, classify(err)))
		}
	}
	return nil, fmt.Errorf("blob %s bytes %d-%d: %w", dgst, off, off+n-1, joinErrors(errs))
}

func (f *op) readRange(ctx context.Context, ep hostEndpoint, repo string, dgst digest.Digest, off, n int64) ([]byte, error) {
	body, start, err := f.getBlob(ctx, ep, repo, dgst, off, off+n-1)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	if start != off {
		// A registry without Range support: skip to the part we want.
		slog.Debug("registry ignored Range, reading up to the range", "digest", dgst, "endpoint", ep.String())
		if _, err := io.CopyN(io.Discard, body, off); err != nil {
			return nil, err
		}
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(body, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("GET %s/v2/%s/blobs/%s bytes %d-%d: %w", ep.URL.Redacted(), repo, dgst, off, off+n-1, err)
	}
	return b, nil
}
