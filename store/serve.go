package store

import (
	"context"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/index"
)

// What `casfs serve` needs of the store beyond the API: records without
// their documents, reachability from a set of images, and verified
// manifest bytes.

// ImageRecords lists the image records without reading any document
// (ListImages also sizes each image).
func (s *Local) ImageRecords(ctx context.Context) ([]ImageInfo, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	var out []ImageInfo
	err = db.Images().List(ctx, "", func(_ string, rec index.Image) error {
		out = append(out, ImageInfo{Name: rec.Name, Target: rec.Target, Labels: rec.Labels, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt})
		return nil
	})
	return out, err
}

// Reach returns every digest the roots reach through the indexes and
// manifests that are local, with the media type it is reached as. It
// marks as garbage collection does, from these roots only.
func (s *Local) Reach(ctx context.Context, roots []ocispec.Descriptor) (map[digest.Digest]string, error) {
	m := newMarker(s, &gcGraph{blobs: map[digest.Digest]blobRec{}, snaps: map[string]index.Snapshot{}})
	m.types = map[digest.Digest]string{}
	for _, r := range roots {
		m.blob(r.Digest, r.MediaType)
	}
	if err := m.run(ctx); err != nil {
		return nil, err
	}
	return m.types, nil
}

// ReadManifest returns the verified bytes of a manifest or index, fetching
// it first when it is recorded but not local.
func (s *Local) ReadManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	if err := s.ensureLocal(ctx, d); err != nil {
		return nil, err
	}
	return s.readDocument(ctx, d, nil)
}
