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

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
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

// ImportContent stages every member as an ingest first and commits them
// only once all have verified, so a bad archive leaves the store unchanged.
func (s *Local) ImportContent(ctx context.Context, r io.Reader) ([]ContentInfo, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	type staged struct {
		w    cas.Writer
		d    digest.Digest
		size int64
	}
	var all []staged
	seen := map[digest.Digest]bool{}
	abort := func() {
		for _, st := range all {
			st.w.Close()
			s.blobs.Abort(ctx, importRef(st.d))
		}
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			abort()
			return nil, fmt.Errorf("import: read archive: %w", err)
		}
		d, skip, err := importMember(hdr)
		if err != nil {
			abort()
			return nil, err
		}
		if skip || seen[d] {
			continue
		}
		seen[d] = true
		w, err := s.blobs.Writer(ctx, importRef(d), cas.WriterOpts{Expected: d, Total: hdr.Size})
		if err != nil {
			abort()
			return nil, fmt.Errorf("import %s: %w", hdr.Name, err)
		}
		all = append(all, staged{w: w, d: d, size: hdr.Size})
		if err := w.Truncate(0); err != nil {
			abort()
			return nil, err
		}
		if _, err := io.Copy(w, tr); err != nil {
			abort()
			return nil, fmt.Errorf("import %s: %w", hdr.Name, err)
		}
		if w.Digest() != d {
			abort()
			return nil, fmt.Errorf("import: member %s does not match its digest (content is %s): %w", hdr.Name, w.Digest(), errdefs.ErrDigestMismatch)
		}
	}
	var out []ContentInfo
	defer s.changed()
	for i, st := range all {
		err := st.w.Commit(ctx, st.size, st.d)
		st.w.Close()
		if err != nil && !errors.Is(err, errdefs.ErrExists) {
			all = all[i+1:]
			abort()
			return out, fmt.Errorf("import %s: %w", st.d, err)
		}
		info, err := s.record(ctx, db, st.d, "")
		if err != nil {
			return out, err
		}
		out = append(out, info)
	}
	return out, nil
}

func importRef(d digest.Digest) string { return "import-" + d.String() }

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
