package daemon

import (
	"context"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/fusefs"
	"github.com/casfs/casfs/layers/merged"
	"github.com/casfs/casfs/store"
)

// source shows a store through the filesystem's Source interface. Merged
// rootfs trees are built once per id and kept until the catalogue changes.
type source struct {
	st *store.Local

	mu    sync.Mutex
	trees map[string]*treeEntry
}

type treeEntry struct {
	once sync.Once
	tree *merged.Tree
	err  error
}

var _ fusefs.Source = (*source)(nil)

func newSource(st *store.Local) *source {
	return &source{st: st, trees: map[string]*treeEntry{}}
}

func (s *source) Blobs(ctx context.Context) ([]fusefs.BlobInfo, error) {
	infos, err := s.st.ListContent(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]fusefs.BlobInfo, len(infos))
	for i, c := range infos {
		out[i] = fusefs.BlobInfo{Digest: c.Digest, Size: c.Size}
	}
	return out, nil
}

func (s *source) BlobInfo(ctx context.Context, d digest.Digest) (fusefs.BlobInfo, error) {
	c, err := s.st.ContentInfo(ctx, d)
	if err != nil {
		return fusefs.BlobInfo{}, err
	}
	return fusefs.BlobInfo{Digest: c.Digest, Size: c.Size}, nil
}

func (s *source) OpenBlob(ctx context.Context, d digest.Digest) (*os.File, error) {
	return s.st.OpenBlob(ctx, d)
}

func (s *source) Images(ctx context.Context) ([]fusefs.ImageInfo, error) {
	views, err := s.st.ImageViews(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]fusefs.ImageInfo, 0, len(views))
	for _, v := range views {
		img := fusefs.ImageInfo{Name: v.Name, Target: v.Target}
		if l := v.Layers; l.Manifest.Digest != "" {
			img.Manifest, img.Config, img.RootfsID = l.Manifest.Digest, l.Config.Digest, l.RootfsID()
			for _, d := range l.Layers {
				img.Layers = append(img.Layers, d.Digest)
			}
		}
		out = append(out, img)
	}
	return out, nil
}

func (s *source) Rootfs(ctx context.Context, id string) (*merged.Tree, error) {
	s.mu.Lock()
	e, ok := s.trees[id]
	if !ok {
		e = &treeEntry{}
		s.trees[id] = e
	}
	s.mu.Unlock()
	e.once.Do(func() {
		var ls []merged.Layer
		ls, e.err = s.st.RootfsSources(ctx, id)
		if e.err == nil {
			e.tree, e.err = merged.BuildLayers(ctx, ls)
		}
	})
	if e.err != nil {
		// Do not cache failures: a later read may succeed (registry back).
		s.mu.Lock()
		if s.trees[id] == e {
			delete(s.trees, id)
		}
		s.mu.Unlock()
	}
	return e.tree, e.err
}

// forget drops cached trees whose images may be gone.
func (s *source) forget() {
	s.mu.Lock()
	s.trees = map[string]*treeEntry{}
	s.mu.Unlock()
}
