package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

// minPrefix is the shortest hex prefix accepted for a digest: long enough
// that a typo does not silently pick another blob.
const minPrefix = 12

// ParseDigest accepts only a complete sha256 digest.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("%q is not a sha256 digest (want sha256:<64 hex>): %w", s, errdefs.ErrInvalidArgument)
	}
	return d, nil
}

func (s *Local) ResolveDigest(ctx context.Context, in string) (digest.Digest, error) {
	if strings.Contains(in, ":") {
		return ParseDigest(in)
	}
	if len(in) == 64 {
		return ParseDigest("sha256:" + in)
	}
	if len(in) < minPrefix || len(in) > 64 || strings.Trim(in, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%q is not a digest or a hex prefix of at least %d characters: %w", in, minPrefix, errdefs.ErrInvalidArgument)
	}
	db, err := s.Index()
	if err != nil {
		return "", err
	}
	var found []digest.Digest
	err = db.Blobs().List(ctx, "sha256:"+in, func(_ string, b index.Blob) error {
		found = append(found, b.Digest)
		if len(found) > 1 {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return "", err
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no blob matches %s: %w", in, errdefs.ErrNotFound)
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("%s is ambiguous: it matches %s and %s: %w", in, found[0], found[1], errdefs.ErrInvalidArgument)
	}
}

var errStop = errors.New("stop")

func (s *Local) Ingest(ctx context.Context, ref string, r io.Reader, opts IngestOptions) (ContentInfo, error) {
	if ref == "" {
		return ContentInfo{}, fmt.Errorf("ingest ref is empty: %w", errdefs.ErrInvalidArgument)
	}
	if opts.Expected != "" {
		if _, err := ParseDigest(opts.Expected.String()); err != nil {
			return ContentInfo{}, err
		}
	}
	// Take the ref's lock before the index, so that a ref held by another
	// ingest is reported as locked, not as a busy store.
	w, err := s.blobs.Writer(ctx, ref, cas.WriterOpts{Expected: opts.Expected, Total: opts.Size})
	if errors.Is(err, errdefs.ErrExists) {
		// Stored already (the expected digest names it): record only.
		db, err := s.Index()
		if err != nil {
			return ContentInfo{}, err
		}
		defer s.changed()
		return s.record(ctx, db, opts.Expected, "")
	}
	if err != nil {
		return ContentInfo{}, err
	}
	defer w.Close()
	db, err := s.Index()
	if err != nil {
		return ContentInfo{}, err
	}
	res, err := cas.CopyResume(ctx, w, r, opts.Size, opts.Expected)
	switch {
	case res.Restarted() && opts.Restarted != nil:
		opts.Restarted(res.Stored, res.Kept)
	case res.Kept > 0 && opts.Resumed != nil:
		opts.Resumed(res.Kept)
	}
	if err != nil && !errors.Is(err, errdefs.ErrExists) {
		return ContentInfo{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	d := opts.Expected
	if d == "" {
		d = w.Digest()
	}
	defer s.changed()
	return s.record(ctx, db, d, "")
}

// record makes sure a committed blob has its index record, creating it from
// the file when it is missing (a crash between commit and record, or a blob
// committed again).
func (s *Local) record(ctx context.Context, db *index.DB, d digest.Digest, mediaType string) (ContentInfo, error) {
	b, err := db.Blobs().Get(ctx, d.String())
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		return ContentInfo{}, err
	}
	fi, err := s.blobs.Info(ctx, d)
	if err != nil {
		return ContentInfo{}, err
	}
	now := time.Now().UTC()
	b = index.Blob{Digest: d, Size: fi.Size, MediaType: mediaType, CreatedAt: now, UpdatedAt: now}
	if err := db.Blobs().Put(ctx, d.String(), b); err != nil {
		return ContentInfo{}, fmt.Errorf("record %s: %w", d, err)
	}
	return b, nil
}

func (s *Local) ListContent(ctx context.Context) ([]ContentInfo, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	var out []ContentInfo
	err = db.Blobs().List(ctx, "", func(_ string, b index.Blob) error {
		out = append(out, b)
		return nil
	})
	return out, err
}

func (s *Local) ContentInfo(ctx context.Context, d digest.Digest) (ContentInfo, error) {
	db, err := s.Index()
	if err != nil {
		return ContentInfo{}, err
	}
	b, err := db.Blobs().Get(ctx, d.String())
	if err != nil {
		return ContentInfo{}, notFound(d, err)
	}
	return b, nil
}

func notFound(d digest.Digest, err error) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return err
}

func (s *Local) ReadContent(ctx context.Context, d digest.Digest, w io.Writer) error {
	if _, err := s.ContentInfo(ctx, d); err != nil {
		return err
	}
	// Hash first, then serve: a corrupt blob must fail before a single
	// byte of it reaches the reader. The second read comes from the page cache.
	if err := s.blobs.Verify(ctx, d); err != nil {
		return fmt.Errorf("read %s: %w", d, err)
	}
	ra, err := s.blobs.ReaderAt(ctx, d)
	if err != nil {
		return fmt.Errorf("read %s: %w", d, err)
	}
	defer ra.Close()
	_, err = io.Copy(w, io.NewSectionReader(ra, 0, ra.Size()))
	return err
}

// removeContent deletes a blob's record and file, whoever needs it
// (RemoveContent, in gc_content.go, checks that first).
func (s *Local) removeContent(ctx context.Context, d digest.Digest) error {
	db, err := s.Index()
	if err != nil {
		return err
	}
	recErr := db.Blobs().Delete(ctx, d.String())
	fileErr := s.blobs.Delete(ctx, d)
	switch {
	case recErr != nil && !errors.Is(recErr, errdefs.ErrNotFound):
		return recErr
	case fileErr != nil && !errors.Is(fileErr, errdefs.ErrNotFound):
		return fileErr
	case recErr != nil && fileErr != nil:
		return fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	s.changed()
	return nil
}

func (s *Local) VerifyContent(ctx context.Context, ds []digest.Digest) ([]Problem, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	var problems []Problem
	check := func(d digest.Digest) {
		if err := s.blobs.Verify(ctx, d); err != nil {
			reason := err.Error()
			if errors.Is(err, errdefs.ErrNotFound) {
				reason = "recorded but its file is missing"
			} else if errors.Is(err, errdefs.ErrDigestMismatch) {
				reason = "content does not match its digest"
			}
			problems = append(problems, Problem{Digest: d, Reason: reason})
		}
	}
	if len(ds) > 0 {
		for _, d := range ds {
			if _, err := db.Blobs().Get(ctx, d.String()); err != nil {
				return nil, notFound(d, err)
			}
			check(d)
		}
		return problems, ctx.Err()
	}
	recorded := map[digest.Digest]bool{}
	err = db.Blobs().List(ctx, "", func(_ string, b index.Blob) error {
		recorded[b.Digest] = true
		check(b.Digest)
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	// A file without a record is a blob whose commit finished but whose
	// record was not written (the process died in between): adopt it once
	// its bytes check out.
	err = s.blobs.Walk(ctx, func(fi cas.Info) error {
		if recorded[fi.Digest] {
			return nil
		}
		if err := s.blobs.Verify(ctx, fi.Digest); err != nil {
			problems = append(problems, Problem{Digest: fi.Digest, Reason: "unrecorded file does not match its digest"})
			return nil
		}
		if _, err := s.record(ctx, db, fi.Digest, ""); err != nil {
			return err
		}
		slog.Info("adopted unrecorded blob", "digest", fi.Digest)
		return nil
	})
	return problems, err
}

func (s *Local) LabelContent(ctx context.Context, d digest.Digest, set map[string]string, del []string) (ContentInfo, error) {
	if err := checkLabels(set); err != nil {
		return ContentInfo{}, err
	}
	db, err := s.Index()
	if err != nil {
		return ContentInfo{}, err
	}
	b, err := db.Blobs().Update(ctx, d.String(), func(b *index.Blob) error {
		b.Labels = editLabels(b.Labels, set, del)
		b.UpdatedAt = time.Now().UTC()
		return nil
	})
	if err != nil {
		return ContentInfo{}, notFound(d, err)
	}
	return b, nil
}

func (s *Local) ActiveIngests(ctx context.Context) ([]IngestStatus, error) {
	sts, err := s.blobs.ListStatuses(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]IngestStatus, 0, len(sts))
	for _, st := range sts {
		out = append(out, IngestStatus{Ref: st.Ref, Offset: st.Offset, Total: st.Total, Expected: st.Expected, StartedAt: st.StartedAt, UpdatedAt: st.UpdatedAt})
	}
	return out, nil
}

// CommitContent commits w and records the blob in the index in one step,
// with labels set on its record: containerd's Writer.Commit with
// WithLabels. Content that was stored already (ErrExists) is recorded all
// the same and the error returned, as containerd does.
func (s *Local) CommitContent(ctx context.Context, w cas.Writer, size int64, expected digest.Digest, labels map[string]string) (ContentInfo, error) {
	db, err := s.Index()
	if err != nil {
		w.Close()
		return ContentInfo{}, err
	}
	d := expected
	if d == "" {
		d = w.Digest()
	}
	cerr := w.Commit(ctx, size, expected)
	if cerr != nil && !errors.Is(cerr, errdefs.ErrExists) {
		return ContentInfo{}, cerr
	}
	defer s.changed()
	info, err := s.record(ctx, db, d, "")
	if err != nil {
		return ContentInfo{}, err
	}
	if len(labels) > 0 {
		if info, err = s.LabelContent(ctx, d, labels, nil); err != nil {
			return ContentInfo{}, err
		}
	}
	return info, cerr
}
