package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/casfs/casfs/errdefs"
)

// ReadBlobRange reads the n bytes at off of a blob the index knows, with one
// HTTP Range request to the registries its source labels name (mirrors
// first, as for whole blobs). Nothing is stored: the caller verifies what
// it keeps (lazy layers check each chunk against its table of contents).
func (f *Fetcher) ReadBlobRange(ctx context.Context, dgst digest.Digest, off, n int64) ([]byte, error) {
	rec, err := f.db.Blobs().Get(ctx, dgst.String())
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", dgst, err)
	}
	if off < 0 || n <= 0 || off+n > rec.Size {
		return nil, fmt.Errorf("blob %s: range %d+%d outside its %d bytes: %w", dgst, off, n, rec.Size, errdefs.ErrInvalidArgument)
	}
	srcs := sourcesOf(rec)
	if len(srcs) == 0 {
		return nil, fmt.Errorf("blob %s: no registry source recorded to fetch it from: %w", dgst, errdefs.ErrNotFound)
	}
	var errs []error
	for _, s := range srcs {
		src, err := f.source(s[0], s[1])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ep := range src.eps {
			b, err := f.readRange(ctx, ep, src.repo, dgst, off, n)
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

func (f *Fetcher) readRange(ctx context.Context, ep Endpoint, repo string, dgst digest.Digest, off, n int64) ([]byte, error) {
	ctx = auth.AppendRepositoryScope(ctx, registry.Reference{Registry: ep.URL.Host, Repository: repo}, auth.ActionPull)
	u := ep.URL.String() + "/v2/" + repo + "/blobs/" + dgst.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+n-1, 10))
	resp, err := f.resolver.AuthClient(ep).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body := io.Reader(resp.Body)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, ok := contentRangeStart(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			return nil, fmt.Errorf("GET %s: partial content %q does not start at %d: %w", u, resp.Header.Get("Content-Range"), off, errdefs.ErrUnavailable)
		}
	case http.StatusOK:
		// A registry without Range support: skip to the part we want.
		slog.Debug("registry ignored Range, reading up to the range", "digest", dgst, "endpoint", ep.String())
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			return nil, err
		}
	default:
		return nil, statusError(resp)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(body, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("GET %s bytes %d-%d: %w", u, off, off+n-1, err)
	}
	return b, nil
}
