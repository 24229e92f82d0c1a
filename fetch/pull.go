package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// PullResult is what a pull fetched.
type PullResult struct {
	Name   string             // normalised reference
	Target ocispec.Descriptor // what the reference resolved to
	// Manifests are the image manifests of the selected platform(s), in
	// index order, with their descriptors alongside.
	Manifests     []ocispec.Manifest
	ManifestDescs []ocispec.Descriptor
}

// fetchManifest returns the bytes of a manifest or index, from the store
// when present, else from have (bytes resolving fetched, when they match
// desc) or the first endpoint that serves the right bytes, committed to the
// store and recorded through Records. desc comes back with its media type
// filled in when the parent did not say. verified, when set, gets the
// bytes once they are known to be desc's, before they are committed and
// recorded: a lazy pull starts on the layers meanwhile.
func (f *op) fetchManifest(ctx context.Context, src source, desc ocispec.Descriptor, have []byte, verified func([]byte, ocispec.Descriptor)) ([]byte, ocispec.Descriptor, error) {
	if desc.MediaType != "" {
		if err := oci.CheckDocumentType(desc); err != nil {
			return nil, desc, err
		}
	}
	if desc.Size > f.opts.MaxManifestSize {
		return nil, desc, fmt.Errorf("manifest %s is %d bytes, over the limit of %d: %w", desc.Digest, desc.Size, f.opts.MaxManifestSize, errdefs.ErrInvalidArgument)
	}
	// Into the caller's lease before looking for it: see Records.Lease.
	if err := f.rec.Lease(ctx, []digest.Digest{desc.Digest}); err != nil {
		return nil, desc, err
	}
	prog := f.progress()
	prog.Start(desc)
	data, err := f.readLocal(ctx, desc)
	existed := err == nil
	if errors.Is(err, errdefs.ErrNotFound) && have != nil {
		data, err = have, f.checkManifest(desc, have)
	} else if errors.Is(err, errdefs.ErrNotFound) {
		data, desc, err = f.downloadManifest(ctx, src, desc)
	}
	if err == nil && desc.MediaType == "" {
		desc.MediaType = oci.Sniff(data)
		err = oci.CheckDocumentType(desc)
	}
	if err == nil && verified != nil {
		verified(data, desc)
	}
	if err == nil && !existed {
		err = f.commitManifest(ctx, desc, data)
	}
	if err == nil {
		err = f.recordBlob(ctx, src, desc)
	}
	prog.Done(desc, err, existed)
	if err != nil {
		return nil, desc, err
	}
	return data, desc, nil
}

func (f *op) readLocal(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	ra, err := f.store.ReaderAt(ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	if ra.Size() != desc.Size {
		return nil, fmt.Errorf("blob %s is %d bytes in the store but the descriptor says %d: %w", desc.Digest, ra.Size(), desc.Size, errdefs.ErrDigestMismatch)
	}
	data := make([]byte, ra.Size())
	if _, err := ra.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return data, nil
}

func (f *op) downloadManifest(ctx context.Context, src source, desc ocispec.Descriptor) ([]byte, ocispec.Descriptor, error) {
	var errs []error
	for _, ep := range src.eps {
		data, got, err := f.downloadManifestFrom(ctx, ep, src.Repo, desc)
		if err == nil {
			return data, got, nil
		}
		err = classify(err)
		if ctx.Err() != nil || isFinal(err) {
			return nil, desc, err
		}
		slog.Debug("manifest fetch failed", "digest", desc.Digest, "endpoint", ep.String(), "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	return nil, desc, fmt.Errorf("manifest %s: %w", desc.Digest, joinErrors(errs))
}

// readManifest reads a manifest's bytes (at most one over the size limit)
// from ep, within the manifest deadline.
func (f *op) readManifest(ctx context.Context, ep hostEndpoint, repo string, desc ocispec.Descriptor) (data []byte, _ ocispec.Descriptor, err error) {
	ctx, cancel := withManifestDeadline(ctx, ep.Deadlines)
	defer cancel()
	defer func() { err = manifestDeadlineErr(ctx, err) }()
	ms := f.resolver.Repository(ep, repo).Manifests()
	var rc io.ReadCloser
	if desc.MediaType == "" {
		var got ocispec.Descriptor
		got, rc, err = ms.FetchReference(ctx, desc.Digest.String())
		if err == nil {
			desc.MediaType = got.MediaType
		}
	} else {
		rc, err = ms.Fetch(ctx, desc)
	}
	if err != nil {
		return nil, desc, err
	}
	defer rc.Close()
	data, err = io.ReadAll(io.LimitReader(rc, f.opts.MaxManifestSize+1))
	return data, desc, err
}

func (f *op) downloadManifestFrom(ctx context.Context, ep hostEndpoint, repo string, desc ocispec.Descriptor) ([]byte, ocispec.Descriptor, error) {
	data, desc, err := f.readManifest(ctx, ep, repo, desc)
	if err != nil {
		return nil, desc, err
	}
	if err := f.checkManifest(desc, data); err != nil {
		return nil, desc, err
	}
	return data, desc, nil
}

// checkManifest checks that data, as the registry served it, is desc.
func (f *op) checkManifest(desc ocispec.Descriptor, data []byte) error {
	if int64(len(data)) > f.opts.MaxManifestSize {
		return fmt.Errorf("manifest %s is over the limit of %d bytes: %w", desc.Digest, f.opts.MaxManifestSize, errdefs.ErrInvalidArgument)
	}
	if int64(len(data)) != desc.Size || digest.FromBytes(data) != desc.Digest {
		return fmt.Errorf("manifest %s: registry served %d bytes that do not match it: %w", desc.Digest, len(data), errdefs.ErrDigestMismatch)
	}
	if desc.MediaType != "" {
		return oci.CheckDocumentType(desc)
	}
	return nil
}

// commitManifest commits data, checked to be desc, to the store.
func (f *op) commitManifest(ctx context.Context, desc ocispec.Descriptor, data []byte) error {
	// Another pull of the same image may be storing this manifest right
	// now: wait for its ingest lock and take its result.
	w, done, err := f.lockIngest(ctx, desc)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	if done {
		return nil
	}
	defer w.Close()
	if err := cas.Copy(ctx, w, bytes.NewReader(data), desc.Size, desc.Digest); err != nil && !errors.Is(err, errdefs.ErrExists) {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	return nil
}

// recordBlob tells the store that desc is present (or known) and came from src.
func (f *op) recordBlob(ctx context.Context, src source, desc ocispec.Descriptor) error {
	if err := f.rec.Record(ctx, desc, src.Source); err != nil {
		return fmt.Errorf("record blob %s: %w", desc.Digest, err)
	}
	return nil
}

// indexPlatforms lists the platforms an index offers, for an error that
// says what to pick instead.
func indexPlatforms(descs []ocispec.Descriptor) string {
	var ps []string
	for _, c := range descs {
		if p := oci.FormatPlatform(c.Platform); p != "" && !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return "no platforms"
	}
	return strings.Join(ps, ", ")
}
