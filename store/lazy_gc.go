package store

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/lazy"
)

// openingLayers counts, per layer, the lazy pulls of this process that
// are opening it. A pull opens a layer (and writes its TOC to the chunk
// cache) as soon as the manifest lists it, before the layer's record is
// written, so that gc must not take a cache for the lack of a record while
// a pull is still at it. No other process can write the store meanwhile:
// the index is locked to the one that holds it.
type openingLayers struct {
	mu sync.Mutex
	n  map[digest.Digest]int
}

func (o *openingLayers) add(d digest.Digest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[digest.Digest]int{}
	}
	o.n[d]++
}

func (o *openingLayers) done(d digest.Digest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n[d]--; o.n[d] <= 0 {
		delete(o.n, d)
	}
}

func (o *openingLayers) has(d digest.Digest) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[d] > 0
}

// staleLazyCaches lists the chunk caches under <root>/lazy/ that nothing
// will read again: of layers with no blob record left (or about to lose it,
// gone), and of layers whose blob is local (completed) unless a mount
// still serves that layer from its chunks. The layers lazy pulls are
// opening are never stale.
func (s *Local) staleLazyCaches(ctx context.Context, gone map[digest.Digest]bool) []RemovedBlob {
	dir := filepath.Join(s.root, "lazy", digest.SHA256.String())
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	db, err := s.Index()
	if err != nil {
		return nil
	}
	var out []RemovedBlob
	for _, e := range ents {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if !e.IsDir() || d.Validate() != nil || s.opening.has(d) {
			continue
		}
		stale := gone[d]
		if !stale {
			if _, err := db.Blobs().Get(ctx, d.String()); errors.Is(err, errdefs.ErrNotFound) {
				stale = true
			} else if _, err := s.blobs.Info(ctx, d); err == nil {
				stale = !s.servedLazily(d)
			}
		}
		if stale {
			out = append(out, RemovedBlob{Digest: d, Size: lazy.CachedBytes(s.lazyCacheDir(d))})
		}
	}
	return out
}

// servedLazily: a mount reads layer d from its chunk cache.
func (s *Local) servedLazily(d digest.Digest) bool {
	if s.lazyLayers == nil {
		return false
	}
	x, ok := s.lazyLayers.cached(d)
	return ok && x.local.Load() == nil
}

// sweepLazyCaches removes stale chunk caches (see staleLazyCaches) and
// reports them; a dry run only reports.
func (s *Local) sweepLazyCaches(ctx context.Context, gone map[digest.Digest]bool, dryRun bool) []RemovedBlob {
	stale := s.staleLazyCaches(ctx, gone)
	if dryRun {
		return stale
	}
	var out []RemovedBlob
	for _, c := range stale {
		if err := os.RemoveAll(s.lazyCacheDir(c.Digest)); err != nil {
			slog.Warn("gc: cannot remove a stale chunk cache", "layer", c.Digest, "err", err)
			continue
		}
		out = append(out, c)
	}
	return out
}

// lazyCaches notes the chunk caches nothing reads any more: garbage that
// gc reclaims, not damage.
func (c *checker) lazyCaches(ctx context.Context) error {
	for _, st := range c.s.staleLazyCaches(ctx, nil) {
		c.note("lazy cache", st.Digest.String(), "chunk cache of %d bytes that nothing reads any more (gc removes it)", st.Size)
	}
	return nil
}
