package fetch

import (
	"context"

	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/oci"
)

// FetchBlob fetches a blob that the index knows but the store lacks, from
// the registry and repository its source label names, verifies it and
// commits it. Concurrent callers for one digest share one download.
func (f *Fetcher) FetchBlob(ctx context.Context, dgst digest.Digest) error {
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("blob %q: %v: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	rec, err := f.db.Blobs().Get(ctx, dgst.String())
	if err != nil {
		return fmt.Errorf("blob %s: %w", dgst, err)
	}
	desc := ocispec.Descriptor{MediaType: rec.MediaType, Digest: dgst, Size: rec.Size}
	srcs := sourcesOf(rec)
	if len(srcs) == 0 {
		if ok, err := f.present(ctx, desc); ok || err != nil {
			return err
		}
		return fmt.Errorf("blob %s: no registry source recorded to fetch it from: %w", dgst, errdefs.ErrNotFound)
	}
	var errs []error
	for _, s := range srcs {
		src, err := f.source(s[0], s[1])
		if err == nil {
			if oci.IsIndex(desc.MediaType) || oci.IsManifest(desc.MediaType) {
				// Registries serve manifests from /manifests/, not /blobs/.
				_, _, err = f.fetchManifest(ctx, src, desc)
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
		errs = append(errs, fmt.Errorf("%s/%s: %w", s[0], s[1], err))
	}
	return joinErrors(errs)
}

// sourcesOf lists the (registry host, repository) pairs of a blob's
// source labels, in a stable order.
func sourcesOf(rec index.Blob) [][2]string {
	var out [][2]string
	for k, v := range rec.Labels {
		host, ok := strings.CutPrefix(k, SourceLabelPrefix)
		if !ok || host == "" {
			continue
		}
		for _, repo := range strings.Split(v, ",") {
			if repo != "" {
				out = append(out, [2]string{host, repo})
			}
		}
	}
	slices.SortFunc(out, func(a, b [2]string) int { return strings.Compare(a[0]+"/"+a[1], b[0]+"/"+b[1]) })
	return out
}
