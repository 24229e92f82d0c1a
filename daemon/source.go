package daemon

import (
	"context"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/fusefs"
	"github.com/casfs/casfs/layers/merged"
	"github.com/casfs/casfs/store"
)

// fsStore is what the filesystem reads of the store: blob records and
// files, the images as the mount shows them, and a rootfs's layers.
type fsStore interface {
	ListContent(ctx context.Context) ([]store.ContentInfo, error)
	ContentInfo(ctx context.Context, d digest.Digest) (store.ContentInfo, error)
	OpenBlob(ctx context.Context, d digest.Digest) (*os.File, error)
	ImageViews(ctx context.Context) ([]store.ImageView, error)
	RootfsTree(ctx context.Context, id string) (*merged.Tree, error)
}

// source shows a store through the filesystem's Source interface.
type source struct {
	st fsStore
}

var _ fusefs.Source = (*source)(nil)

func newSource(st fsStore) *source {
	return &source{st: st}
}

func (s *source) Blobs(ctx context.Context) ([]fusefs.BlobInfo, error) {
	infos, err := s.st.ListContent(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]fusefs.BlobInfo, len(infos))
	for i, c := range infos {
		out[i] = blobInfo(c)
	}
	return out, nil
}

func (s *source) BlobInfo(ctx context.Context, d digest.Digest) (fusefs.BlobInfo, error) {
	c, err := s.st.ContentInfo(ctx, d)
	if err != nil {
		return fusefs.BlobInfo{}, err
	}
	return blobInfo(c), nil
}

// blobInfo is what the filesystem shows of a blob record: its time is when
// the store first recorded it (the update time for a record without one).
func blobInfo(c store.ContentInfo) fusefs.BlobInfo {
	at := c.CreatedAt
	if at.IsZero() {
		at = c.UpdatedAt
	}
	return fusefs.BlobInfo{Digest: c.Digest, Size: c.Size, ModTime: at}
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

// Rootfs builds the merged tree of one rootfs id. The filesystem keeps it
// while the kernel holds any of its nodes and asks again after that.
func (s *source) Rootfs(ctx context.Context, id string) (*merged.Tree, error) {
	return s.st.RootfsTree(ctx, id)
}
