package store

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

const blobsDir = "blobs/sha256/"

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
	tw := tar.NewWriter(w)
	for _, d := range ds {
		if err := s.exportBlob(ctx, tw, d); err != nil {
			return err
		}
	}
	return tw.Close()
}

func (s *Local) exportBlob(ctx context.Context, tw *tar.Writer, d digest.Digest) error {
	ra, err := s.blobs.ReaderAt(ctx, d)
	if err != nil {
		return fmt.Errorf("export %s: %w", d, err)
	}
	defer ra.Close()
	hdr := &tar.Header{
		Name: blobsDir + d.Encoded(), Mode: 0o444, Size: ra.Size(),
		Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	// Hash while copying: an archive must never carry bytes that do not
	// match their name.
	v := d.Verifier()
	if _, err := io.Copy(io.MultiWriter(tw, v), io.NewSectionReader(ra, 0, ra.Size())); err != nil {
		return fmt.Errorf("export %s: %w", d, err)
	}
	if !v.Verified() {
		return fmt.Errorf("export %s: content does not match its digest: %w", d, errdefs.ErrDigestMismatch)
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
	var order []digest.Digest
	sizes := map[digest.Digest]int64{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("import: read archive: %w", err)
		}
		d, skip, err := importMember(hdr)
		if err != nil {
			return nil, err
		}
		if skip {
			continue
		}
		if old, seen := sizes[d]; seen {
			if old != hdr.Size {
				return nil, fmt.Errorf("import: member %s appears twice with different sizes: %w", hdr.Name, errdefs.ErrInvalidArgument)
			}
		} else {
			order = append(order, d)
			sizes[d] = hdr.Size
		}
		if err := batch.Add(ctx, tr, d, hdr.Size); err != nil {
			return nil, fmt.Errorf("import: member %s: %w", hdr.Name, err)
		}
	}
	if _, err := batch.Commit(ctx); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer s.changed()
	now := time.Now().UTC()
	out := make([]ContentInfo, 0, len(order))
	var fresh []index.Entry[index.Blob]
	for _, d := range order {
		if b, err := db.Blobs().Get(ctx, d.String()); err == nil {
			out = append(out, b)
			continue
		}
		b := index.Blob{Digest: d, Size: sizes[d], CreatedAt: now, UpdatedAt: now}
		fresh = append(fresh, index.Entry[index.Blob]{Key: d.String(), Value: b})
		out = append(out, b)
	}
	if err := db.Blobs().PutMany(ctx, fresh); err != nil {
		return nil, fmt.Errorf("import: record blobs: %w", err)
	}
	return out, nil
}

// importMember checks one archive member: directories are skipped, regular
// files must be named blobs/sha256/<hex>, anything else is refused.
func importMember(hdr *tar.Header) (d digest.Digest, skip bool, err error) {
	name := hdr.Name
	bad := func(why string) (digest.Digest, bool, error) {
		return "", false, fmt.Errorf("import: member %q %s: %w", name, why, errdefs.ErrInvalidArgument)
	}
	if path.IsAbs(name) || strings.HasPrefix(name, "../") || strings.Contains(name, "/../") || name == ".." {
		return bad("is outside the archive")
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return "", true, nil
	case tar.TypeReg:
	default:
		return bad("is not a regular file")
	}
	clean := strings.TrimPrefix(path.Clean(name), "./")
	if !strings.HasPrefix(clean, blobsDir) {
		return bad("is not under " + blobsDir)
	}
	d, perr := ParseDigest("sha256:" + strings.TrimPrefix(clean, blobsDir))
	if perr != nil {
		return bad("is not named by its digest")
	}
	return d, false, nil
}
