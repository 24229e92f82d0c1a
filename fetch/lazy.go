package fetch

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// fetchKnown fetches a blob that the store knows but lacks, from the
// registries and repositories it came from, verifies it and commits it.
func (f *op) fetchKnown(ctx context.Context, dgst digest.Digest) error {
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("blob %q: %v: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	k, err := f.rec.Lookup(ctx, dgst)
	if err != nil {
		return fmt.Errorf("blob %s: %w", dgst, err)
	}
	desc := ocispec.Descriptor{MediaType: k.Desc.MediaType, Digest: dgst, Size: k.Desc.Size}
	if len(k.Sources) == 0 {
		if ok, err := f.present(ctx, desc); ok || err != nil {
			return err
		}
		return fmt.Errorf("blob %s: no registry source recorded to fetch it from: %w", dgst, errdefs.ErrNotFound)
	}
	var errs []error
	for _, s := range k.Sources {
		src, err := f.source(s.Host, s.Repo)
		if err == nil {
			if oci.IsIndex(desc.MediaType) || oci.IsManifest(desc.MediaType) {
				// Registries serve manifests from /manifests/, not /blobs/.
				_, _, err = f.fetchManifest(ctx, src, desc, nil, nil)
			} else {
				_, err = f.fetchBlob(ctx, src, desc)
			}
			if err == nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return err
		}
		errs = append(errs, fmt.Errorf("%s/%s: %w", s.Host, s.Repo, err))
	}
	return joinErrors(errs)
}

// errNotLarge: the blob endpoint does not know the digest as a blob over
// the size asked for.
var errNotLarge = errors.New("not a blob over the size asked for")

// fetchBlobByRef fetches the blob pr@digest names through the blob
// endpoint. With minSize >= 0 it is a probe: a blob the endpoints do not
// know, or know at minSize bytes or less, is errNotLarge, with nothing
// fetched; a failure to fetch a blob found over minSize is returned.
func (f *op) fetchBlobByRef(ctx context.Context, pr Reference, minSize int64) (ocispec.Descriptor, error) {
	src, err := f.source(pr.Host, pr.Repo)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	probe := minSize >= 0
	var errs []error
	for _, ep := range src.eps {
		desc, err := f.resolver.Repository(ep, pr.Repo).Blobs().Resolve(ctx, pr.Digest.String())
		if err == nil && desc.Digest != pr.Digest {
			err = fmt.Errorf("%s answered digest %s for %s: %w", ep, desc.Digest, pr.Digest, errdefs.ErrDigestMismatch)
		}
		if probe && (err != nil || desc.Size <= minSize) {
			if ctx.Err() != nil {
				return ocispec.Descriptor{}, ctx.Err()
			}
			continue
		}
		if err == nil {
			desc.MediaType = "application/octet-stream"
			one := source{Source: src.Source, eps: []hostEndpoint{ep}}
			if _, err = f.fetchBlob(ctx, one, desc); err == nil {
				err = f.recordBlob(ctx, one, desc)
			}
			if err == nil {
				return desc, nil
			}
		}
		if ctx.Err() != nil {
			return ocispec.Descriptor{}, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, classify(err)))
	}
	if probe && len(errs) == 0 {
		return ocispec.Descriptor{}, errNotLarge
	}
	return ocispec.Descriptor{}, fmt.Errorf("blob %s: %w", pr.Name, joinErrors(errs))
}
