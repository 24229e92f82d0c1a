package store

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/casfs/casfs/internal/gcburst"
	"github.com/casfs/casfs/internal/hugeheap"
	"github.com/casfs/casfs/layers/merged"
)

// RootfsTree builds the merged tree of one rootfs id for the mount, from
// rootfsSources. A tree that a lazy pull built ahead is handed over
// instead, once.
func (s *Local) RootfsTree(ctx context.Context, id string) (*merged.Tree, error) {
	if t, ok := s.takePrebuilt(ctx, id); ok {
		return t, nil
	}
	ls, err := s.rootfsSources(ctx, id)
	if err != nil {
		return nil, err
	}
	return buildTree(ctx, ls)
}

// buildTree merges ls. A tree from eStargz TOCs, on the path of a lazy
// start, is built from memory in a burst of small allocations (laxer
// collector, huge pages); trees read from disk are not, and keep the
// daemon's footprint.
func buildTree(ctx context.Context, ls []merged.Layer) (*merged.Tree, error) {
	for _, l := range ls {
		if !merged.ReadsDisk(l) {
			defer gcburst.Begin()()
			defer hugeheap.Begin()()
			break
		}
	}
	return merged.BuildLayers(ctx, ls)
}

// prebuiltTree is the tree of the image a lazy pull just made, built while
// the pull stores its TOCs and records, so that the first lookup in its
// rootfs does not wait for it. One is kept at a time, for prebuiltTTL.
type prebuiltTree struct {
	id   string
	il   ImageLayers
	done chan struct{}
	tree *merged.Tree
	err  error
}

const prebuiltTTL = time.Minute

type prebuilt struct {
	mu   sync.Mutex
	tree *prebuiltTree
}

// prebuildTree starts building the tree of il in the background when the
// mount serves this store and every layer of il is served lazily; the
// layers opens is opening are walked as their opens end.
func (s *Local) prebuildTree(ctx context.Context, il ImageLayers, opens *tocOpens) {
	if s.lazyLayers == nil || len(il.Layers) == 0 {
		return
	}
	sn, err := s.Snapshotter()
	if err != nil {
		return
	}
	ls, ok, err := s.lazySources(ctx, sn, il, opens)
	if err != nil || !ok {
		return
	}
	p := &prebuiltTree{id: il.RootfsID(), il: il, done: make(chan struct{})}
	s.pre.mu.Lock()
	s.pre.tree = p
	s.pre.mu.Unlock()
	started := s.goBackground(func() {
		defer close(p.done)
		start := time.Now()
		// Built from memory: the store's lifetime, not the pull's.
		p.tree, p.err = buildTree(s.lazyLayers.ctx, ls)
		slog.Debug("lazy pull: rootfs tree built ahead", "rootfs", p.id, "took", time.Since(start), "err", p.err)
	})
	if !started {
		p.err = s.closing.Err()
		close(p.done)
	}
	time.AfterFunc(prebuiltTTL, func() {
		s.pre.mu.Lock()
		if s.pre.tree == p {
			s.pre.tree = nil
		}
		s.pre.mu.Unlock()
	})
}

// takePrebuilt hands over the tree built ahead for id, if there is one and
// it was built without error.
func (s *Local) takePrebuilt(ctx context.Context, id string) (*merged.Tree, bool) {
	s.pre.mu.Lock()
	p := s.pre.tree
	if p == nil || p.id != id {
		s.pre.mu.Unlock()
		return nil, false
	}
	s.pre.tree = nil
	s.pre.mu.Unlock()
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, false
	}
	if p.err != nil {
		return nil, false
	}
	s.lazyLayers.completeLater(id, p.il)
	return p.tree, true
}
