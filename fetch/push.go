package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// pushPlan is an image's content in upload order: blobs first, then
// manifests bottom-up (children before the index naming them).
type pushPlan struct {
	blobs     []ocispec.Descriptor
	manifests []ocispec.Descriptor
	data      map[digest.Digest][]byte
}

// push sends the local image localName (whose target is root) to
// remoteRef: blobs the registry lacks (HEAD first), mounted across
// repositories when they came from another repository of the same
// registry, uploaded otherwise, MaxConcurrent at a time; then manifests
// bottom-up and finally the tag.
func (f *op) push(ctx context.Context, localName string, root ocispec.Descriptor, remoteRef string) error {
	pr, err := ParseReference(remoteRef)
	if err != nil {
		return err
	}
	target := root
	if f.opts.Platform != "" && oci.IsIndex(target.MediaType) {
		// Like ctr: one platform's manifest goes, the index stays behind,
		// and nothing of the other platforms is read or fetched.
		if target, err = f.platformManifest(ctx, target); err != nil {
			return fmt.Errorf("push %s: %w", pr.Name, err)
		}
	}
	if pr.Digest != "" && pr.Digest != target.Digest {
		return fmt.Errorf("push %s: image %s is %s, not the digest named: %w", pr.Name, localName, target.Digest, errdefs.ErrInvalidArgument)
	}
	eps, err := f.resolver.endpointsWith(pr.Host, capPush)
	if err != nil {
		return err
	}
	ep := eps[0]
	repo := f.resolver.Repository(ep, pr.Repo)
	plan := &pushPlan{data: map[digest.Digest][]byte{}}
	rootRec, _ := f.rec.Lookup(ctx, root.Digest)
	if err := f.planPush(ctx, target, rootRec, nil, plan); err != nil {
		return fmt.Errorf("push %s: %w", pr.Name, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.opts.MaxConcurrent)
	for _, d := range plan.blobs {
		g.Go(func() error { return f.pushBlob(gctx, repo, pr, d, rootRec) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("push %s: %w", pr.Name, err)
	}
	prog := f.progress()
	for i, d := range plan.manifests {
		prog.Start(d)
		body := bytes.NewReader(plan.data[d.Digest])
		var err error
		if i == len(plan.manifests)-1 && pr.Tag != "" {
			err = repo.PushReference(ctx, d, body, pr.Tag)
		} else {
			err = repo.Manifests().Push(ctx, d, body)
		}
		err = classify(err)
		prog.Done(d, err, false)
		if err != nil {
			return fmt.Errorf("push %s: manifest %s: %w", pr.Name, d.Digest, err)
		}
	}
	return nil
}

// platformManifest finds the manifest of the fetcher's platform under a
// local index, descending into nested indexes.
func (f *op) platformManifest(ctx context.Context, root ocispec.Descriptor) (ocispec.Descriptor, error) {
	var seen []ocispec.Descriptor
	mans, err := oci.Manifests(ctx, f.readLocal, root, func(entries []ocispec.Descriptor) []ocispec.Descriptor {
		seen = append(seen, entries...)
		return f.platform.Select(entries)
	})
	if err != nil {
		return root, err
	}
	if len(mans) == 0 {
		return root, fmt.Errorf("index %s has no manifest for platform %s (it has %s): %w", root.Digest, f.platform, indexPlatforms(seen), errdefs.ErrNotFound)
	}
	return mans[0], nil
}

// planPush reads the manifests under desc from the store (fetching those
// only the registry has, such as other platforms of a pulled index) and
// lists what to upload.
func (f *op) planPush(ctx context.Context, desc ocispec.Descriptor, parent Known, stack []digest.Digest, plan *pushPlan) error {
	if slices.Contains(stack, desc.Digest) || len(stack) >= oci.MaxDepth {
		return fmt.Errorf("index %s references itself: %w", desc.Digest, errdefs.ErrInvalidArgument)
	}
	if _, ok := plan.data[desc.Digest]; ok {
		return nil
	}
	if err := oci.CheckDocumentType(desc); err != nil {
		return err
	}
	rec, err := f.ensureLocal(ctx, desc, parent)
	if err != nil {
		return err
	}
	data, err := f.readLocal(ctx, desc)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	plan.data[desc.Digest] = data
	doc, err := oci.Parse(desc, data)
	if err != nil {
		return err
	}
	if doc.Index != nil {
		for _, c := range doc.Index.Manifests {
			if err := f.planPush(ctx, c, rec, append(stack, desc.Digest), plan); err != nil {
				return err
			}
		}
	} else {
		for _, b := range doc.Parts() {
			if !slices.ContainsFunc(plan.blobs, func(x ocispec.Descriptor) bool { return x.Digest == b.Digest }) {
				plan.blobs = append(plan.blobs, b)
			}
		}
	}
	plan.manifests = append(plan.manifests, desc)
	return nil
}

// ensureLocal returns what the store knows of desc, fetching the blob first
// when the store lacks it; a blob the store does not know inherits its
// parent's sources.
func (f *op) ensureLocal(ctx context.Context, desc ocispec.Descriptor, parent Known) (Known, error) {
	rec, err := f.rec.Lookup(ctx, desc.Digest)
	if errors.Is(err, errdefs.ErrNotFound) {
		// Recorded the way a pull records what it fetches, so that it can
		// be fetched from where its parent came.
		for _, s := range parent.Sources {
			if err := f.recordBlob(ctx, source{Source: s}, desc); err != nil {
				return rec, err
			}
		}
		if rec, err = f.rec.Lookup(ctx, desc.Digest); errors.Is(err, errdefs.ErrNotFound) {
			rec, err = Known{Desc: desc}, nil
		}
	}
	if err != nil {
		return rec, fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	ok, err := f.present(ctx, desc)
	if err != nil || ok {
		return rec, err
	}
	return rec, f.fetchKnown(ctx, desc.Digest)
}

// pushBlob makes d present in the remote repository.
func (f *op) pushBlob(ctx context.Context, repo *remote.Repository, pr Reference, d ocispec.Descriptor, root Known) error {
	prog := f.progress()
	prog.Start(d)
	exists, err := repo.Blobs().Exists(ctx, d)
	if err != nil {
		err = classify(err)
		prog.Done(d, err, false)
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if exists {
		prog.Done(d, nil, true)
		return nil
	}
	open := func() (io.ReadCloser, error) {
		if _, err := f.ensureLocal(ctx, d, root); err != nil {
			return nil, err
		}
		ra, err := f.store.ReaderAt(ctx, d.Digest)
		if err != nil {
			return nil, err
		}
		r := &progressReader{r: io.NewSectionReader(ra, 0, ra.Size()), desc: d, prog: prog}
		return readCloser{r, ra}, nil
	}
	rec, _ := f.rec.Lookup(ctx, d.Digest)
	if len(rec.Sources) == 0 {
		rec = root
	}
	for _, s := range rec.Sources {
		if s.Host != pr.Host || s.Repo == pr.Repo {
			continue
		}
		// oras falls back to uploading from open() when the registry
		// answers 202 instead of mounting.
		err = classify(repo.Mount(ctx, d, s.Repo, open))
		prog.Done(d, err, false)
		if err != nil {
			return fmt.Errorf("blob %s: mount from %s: %w", d.Digest, s.Repo, err)
		}
		return nil
	}
	rc, err := open()
	if err == nil {
		err = repo.Blobs().Push(ctx, d, rc)
		rc.Close()
	}
	err = classify(err)
	prog.Done(d, err, false)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

type progressReader struct {
	r    io.Reader
	desc ocispec.Descriptor
	done int64
	prog Progress
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	p.prog.Update(p.desc, p.done)
	return n, err
}
