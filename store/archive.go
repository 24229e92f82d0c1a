package store

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/archive"
	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/index"
)

func (s *Local) ExportContent(ctx context.Context, w io.Writer, ds []digest.Digest) error {
	if len(ds) == 0 {
		all, err := s.ListContent(ctx)
		if err != nil {
			return err
		}
		for _, c := range all {
			ds = append(ds, c.Digest)
		}
	} else {
		for _, d := range ds {
			if _, err := s.ContentInfo(ctx, d); err != nil {
				return err
			}
		}
	}
	aw := archive.NewWriter(w)
	for _, d := range ds {
		if err := s.exportBlob(ctx, aw, d); err != nil {
			return err
		}
	}
	return aw.Close()
}

func (s *Local) exportBlob(ctx context.Context, aw *archive.Writer, d digest.Digest) error {
	ra, err := s.blobs.ReaderAt(ctx, d)
	if err != nil {
		return fmt.Errorf("export %s: %w", d, err)
	}
	defer ra.Close()
	if err := aw.WriteBlob(d, ra.Size(), io.NewSectionReader(ra, 0, ra.Size())); err != nil {
		return fmt.Errorf("export %w", err)
	}
	return nil
}

// ImportContent stages every member in one cas batch and makes them visible
// only once all have verified, so a bad archive leaves the store unchanged;
// the records are written in one batch too.
func (s *Local) ImportContent(ctx context.Context, r io.Reader) ([]ContentInfo, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	batch, err := s.blobs.NewBatch()
	if err != nil {
		return nil, err
	}
	defer batch.Abort()
	blobs, err := archive.ReadBlobs(ctx, r, batchStager{batch})
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if _, err := batch.Commit(ctx); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer s.changed()
	now := time.Now().UTC()
	out := make([]ContentInfo, 0, len(blobs))
	var fresh []index.Entry[index.Blob]
	for _, ab := range blobs {
		d := ab.Digest
		if b, err := db.Blobs().Get(ctx, d.String()); err == nil {
			out = append(out, b)
			continue
		}
		b := index.Blob{Digest: d, Size: ab.Size, CreatedAt: now, UpdatedAt: now}
		fresh = append(fresh, index.Entry[index.Blob]{Key: d.String(), Value: b})
		out = append(out, b)
	}
	if err := db.Blobs().PutMany(ctx, fresh); err != nil {
		return nil, fmt.Errorf("import: record blobs: %w", err)
	}
	return out, nil
}

// batchStager stages a tar of blobs into one cas batch.
type batchStager struct{ b *cas.Batch }

func (st batchStager) Stage(ctx context.Context, member string, r io.Reader, size int64, expected digest.Digest) (digest.Digest, error) {
	if err := st.b.Add(ctx, r, expected, size); err != nil {
		return "", fmt.Errorf("archive member %q: %w", member, err)
	}
	return expected, nil
}
