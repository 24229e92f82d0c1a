package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/archive"
	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

// archiveStager stages an archive's members as ingests under refs of its
// own; nothing becomes visible until commit.
type archiveStager struct {
	s      *Local
	u      *importUnpacker // nil: no unpack while reading
	prefix string
	n      int
	staged map[digest.Digest]*stagedBlob
	refs   []string // every ingest started, for abort
}

// verifyMember reads a member that needs no staging and checks its bytes
// all the same: an archive is refused whole if any member lies.
func verifyMember(member string, r io.Reader, expected digest.Digest) (digest.Digest, error) {
	v := expected.Verifier()
	if _, err := io.Copy(v, r); err != nil {
		return "", fmt.Errorf("archive member %q: %w", member, err)
	}
	if !v.Verified() {
		return "", mismatch(member, "")
	}
	return expected, nil
}

type stagedBlob struct {
	w    cas.Writer
	ref  string
	size int64
}

// Stage stages one member, showing its bytes to the unpacker as they pass.
func (a *archiveStager) Stage(ctx context.Context, member string, r io.Reader, size int64, expected digest.Digest) (digest.Digest, error) {
	w := a.u.watch(expected, size)
	if w != nil {
		r = io.TeeReader(r, w)
	}
	d, err := a.stage(ctx, member, r, size, expected)
	a.u.staged(w, d, a.opener(d), err)
	return d, err
}

// opener reads d's staged bytes, or the stored blob.
func (a *archiveStager) opener(d digest.Digest) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		if sb := a.staged[d]; sb != nil {
			return a.s.blobs.OpenIngest(sb.ref)
		}
		ra, err := a.s.blobs.ReaderAt(context.Background(), d)
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(ra, 0, ra.Size()), ra}, nil
	}
}

func (a *archiveStager) stage(ctx context.Context, member string, r io.Reader, size int64, expected digest.Digest) (digest.Digest, error) {
	if expected != "" && a.staged[expected] != nil {
		return verifyMember(member, r, expected) // the same blob again: keep the first
	}
	a.n++
	ref := fmt.Sprintf("%s-%d", a.prefix, a.n)
	w, err := a.s.blobs.Writer(ctx, ref, cas.WriterOpts{Expected: expected, Total: size})
	if errors.Is(err, errdefs.ErrExists) {
		return verifyMember(member, r, expected) // stored already
	}
	if err != nil {
		return "", fmt.Errorf("stage archive member %q: %w", member, err)
	}
	a.refs = append(a.refs, ref)
	keep := false
	defer func() {
		if !keep {
			w.Close()
		}
	}()
	if err := w.Truncate(0); err != nil {
		return "", err
	}
	n, err := io.Copy(w, r)
	if err != nil {
		return "", fmt.Errorf("archive member %q: %w", member, err)
	}
	if n != size {
		return "", fmt.Errorf("archive member %q: %d of %d bytes: %w", member, n, size, io.ErrUnexpectedEOF)
	}
	d := w.Digest()
	if expected != "" && d != expected {
		return "", mismatch(member, d)
	}
	if a.staged[d] == nil {
		a.staged[d] = &stagedBlob{w: w, ref: ref, size: size}
		keep = true
	}
	return d, nil
}

func mismatch(member string, got digest.Digest) error {
	if got == "" {
		return fmt.Errorf("archive member %q does not match the digest it is named by: %w", member, errdefs.ErrDigestMismatch)
	}
	return fmt.Errorf("archive member %q does not match the digest it is named by (its content is %s): %w", member, got, errdefs.ErrDigestMismatch)
}

// abort drops every ingest the import started and did not commit.
func (a *archiveStager) abort(ctx context.Context) {
	for _, st := range a.staged {
		st.w.Close()
	}
	for _, ref := range a.refs {
		if err := a.s.blobs.Abort(ctx, ref); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			slog.Warn("import: drop staged ingest", "ref", ref, "err", err)
		}
	}
}

// ImportImages stages every member, checks that the archive's images are
// complete and their names unambiguous, and only then commits the blobs
// they reach, unpacks and records the images.
func (s *Local) ImportImages(ctx context.Context, r io.Reader, opts ImportOptions) ([]ImageInfo, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	if opts.BaseName != "" {
		if _, err := reference.ParseNormalizedNamed(opts.BaseName); err != nil {
			return nil, fmt.Errorf("base name %q is not an image name: %w", opts.BaseName, errdefs.ErrInvalidArgument)
		}
	}
	// Lease what the import makes before making it, so that a concurrent
	// collection keeps it until the image records exist.
	ctx, release, err := s.HoldLease(ctx, "import")
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer release()
	st := &archiveStager{s: s, prefix: "archive-import-" + strings.ToLower(rand.Text()), staged: map[digest.Digest]*stagedBlob{}}
	defer st.abort(context.WithoutCancel(ctx))
	if !opts.NoUnpack {
		if st.u, err = newImportUnpacker(ctx, s); err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		defer st.u.abort()
	}
	contents, err := archive.Read(ctx, r, st)
	st.u.finish() // the staged ingests are renamed by the commits below
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	plan, err := contents.Resolve()
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	names, err := importNames(plan, opts)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	leased := make([]digest.Digest, 0, len(plan.Blobs))
	for d := range plan.Blobs {
		leased = append(leased, d)
	}
	if err := index.AddToLease(ctx, leased); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}

	// Commit: generated documents first (they are small), then what the
	// archive carried; blobs no image reaches are dropped with the ingests.
	for d, b := range plan.Generated {
		if err := s.commitBytes(ctx, d, b); err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
	}
	defer s.changed()
	for d, desc := range plan.Blobs {
		if sb := st.staged[d]; sb != nil {
			err := sb.w.Commit(ctx, sb.size, d)
			if err != nil && !errors.Is(err, errdefs.ErrExists) {
				return nil, fmt.Errorf("import: commit %s: %w", d, err)
			}
		}
		if _, err := s.record(ctx, db, d, desc.MediaType); err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
	}
	if !opts.NoUnpack {
		for _, img := range plan.Images {
			for _, md := range img.Manifests {
				if md.Platform != nil && !s.host.Match(md.Platform) {
					continue
				}
				il, err := s.imageLayers(ctx, md)
				if err != nil {
					return nil, fmt.Errorf("import: unpack %s: %w", md.Digest, err)
				}
				if err := s.unpack(st.u.imageContext(ctx, md.Digest), il, nil); err != nil {
					return nil, fmt.Errorf("import: %w", err)
				}
			}
		}
	}
	var out []ImageInfo
	for _, n := range names {
		rec, err := s.recordImage(ctx, n.name, n.target)
		if err != nil {
			return out, fmt.Errorf("import: %w", err)
		}
		out = append(out, s.imageInfo(ctx, rec))
	}
	return out, nil
}

func (s *Local) commitBytes(ctx context.Context, d digest.Digest, b []byte) error {
	w, err := s.blobs.Writer(ctx, "archive-import-"+d.String(), cas.WriterOpts{Expected: d, Total: int64(len(b))})
	if errors.Is(err, errdefs.ErrExists) {
		return nil
	}
	if err != nil {
		return err
	}
	defer w.Close()
	if err := cas.Copy(ctx, w, strings.NewReader(string(b)), int64(len(b)), d); err != nil && !errors.Is(err, errdefs.ErrExists) {
		return fmt.Errorf("store %s: %w", d, err)
	}
	return nil
}

type importName struct {
	name   string
	target ocispec.Descriptor
}

// importNames names every image of the plan: its full names, else its ref
// name (a tag joined to the base name), plus repository@digest names with
// opts.Digests. Two images under one name are refused.
func importNames(plan *archive.Plan, opts ImportOptions) ([]importName, error) {
	var out []importName
	seen := map[string]digest.Digest{}
	add := func(name string, target ocispec.Descriptor) error {
		if old, ok := seen[name]; ok {
			if old != target.Digest {
				return fmt.Errorf("the archive names two different images %s: %s and %s: %w", name, old, target.Digest, errdefs.ErrInvalidArgument)
			}
			return nil
		}
		seen[name] = target.Digest
		out = append(out, importName{name: name, target: target})
		return nil
	}
	for _, img := range plan.Images {
		var names []string
		for _, n := range img.Names {
			norm, err := NormalizeName(n)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", img.Target.Digest, err)
			}
			names = append(names, norm)
		}
		if len(names) == 0 && img.RefName != "" {
			n, err := nameFromRef(img.RefName, opts.BaseName)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", img.Target.Digest, err)
			}
			names = append(names, n)
		}
		if opts.Digests {
			repos := map[string]bool{}
			for _, n := range names {
				if named, err := reference.ParseNormalizedNamed(n); err == nil {
					repos[reference.TrimNamed(named).String()] = true
				}
			}
			if len(repos) == 0 && opts.BaseName != "" {
				named, _ := reference.ParseNormalizedNamed(opts.BaseName)
				repos[reference.TrimNamed(named).String()] = true
			}
			for repo := range repos {
				names = append(names, repo+"@"+img.Target.Digest.String())
			}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("image %s in the archive has no name (give --base-name with --digests to name it by digest): %w", img.Target.Digest, errdefs.ErrInvalidArgument)
		}
		for _, n := range names {
			if err := add(n, img.Target); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// bareTag is a docker tag and nothing else. It is compiled on first use:
// every command's start would pay for it otherwise, and only imports need it.
var bareTag = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
})

// nameFromRef reads org.opencontainers.image.ref.name: a bare tag is joined
// to base; anything else must be a full reference.
func nameFromRef(ref, base string) (string, error) {
	if bareTag().MatchString(ref) {
		if base == "" {
			return "", fmt.Errorf("it is named only by the tag %q; give --base-name: %w", ref, errdefs.ErrInvalidArgument)
		}
		named, err := reference.ParseNormalizedNamed(base)
		if err != nil {
			return "", fmt.Errorf("base name %q: %w", base, errdefs.ErrInvalidArgument)
		}
		return NormalizeName(reference.TrimNamed(named).String() + ":" + ref)
	}
	return NormalizeName(ref)
}
