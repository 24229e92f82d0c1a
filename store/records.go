package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/fetch"
	"github.com/casfs/casfs/index"
)

// labelSourcePrefix + registry host labels a blob with the repositories it
// came from, as containerd does, so that it can be fetched again lazily or
// mounted across repositories on push.
const labelSourcePrefix = "containerd.io/distribution.source."

// fetchRecords is the store's side of fetch (fetch.Records): the one place
// that writes the records of what fetch fetched or learned of.
type fetchRecords struct{ s *Local }

var _ fetch.Records = fetchRecords{}

func (r fetchRecords) Lease(ctx context.Context, dgsts []digest.Digest) error {
	return index.AddToLease(ctx, dgsts)
}

// Record writes or updates desc's record: media type when it had none,
// src added to its source label, both times set.
func (r fetchRecords) Record(ctx context.Context, desc ocispec.Descriptor, src fetch.Source) error {
	db, err := r.s.Index()
	if err != nil {
		return err
	}
	key := labelSourcePrefix + src.Host
	now := time.Now().UTC()
	update := func(b *index.Blob) error {
		if b.MediaType == "" {
			b.MediaType = desc.MediaType
		}
		if b.Labels == nil {
			b.Labels = map[string]string{}
		}
		repos := strings.Split(b.Labels[key], ",")
		if !slices.Contains(repos, src.Repo) {
			repos = append(repos, src.Repo)
		}
		b.Labels[key] = strings.Trim(strings.Join(repos, ","), ",")
		if b.CreatedAt.IsZero() {
			b.CreatedAt = now // a record older versions wrote without times
		}
		b.UpdatedAt = now
		return nil
	}
	blobs := db.Blobs()
	for range 3 {
		_, err := blobs.Update(ctx, desc.Digest.String(), update)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
		b := index.Blob{Digest: desc.Digest, Size: desc.Size, CreatedAt: now}
		_ = update(&b)
		err = blobs.Create(ctx, desc.Digest.String(), b)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errdefs.ErrExists) {
			return err
		}
	}
	return fmt.Errorf("concurrent updates kept racing: %w", errdefs.ErrLocked)
}

func (r fetchRecords) Lookup(ctx context.Context, dgst digest.Digest) (fetch.Known, error) {
	db, err := r.s.Index()
	if err != nil {
		return fetch.Known{}, err
	}
	b, err := db.Blobs().Get(ctx, dgst.String())
	if err != nil {
		return fetch.Known{}, err
	}
	return fetch.Known{Desc: ocispec.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size}, Sources: sourcesOf(b)}, nil
}

// sourcesOf lists the repositories a blob's source labels name, in a
// stable order.
func sourcesOf(b index.Blob) []fetch.Source {
	var out []fetch.Source
	for k, v := range b.Labels {
		host, ok := strings.CutPrefix(k, labelSourcePrefix)
		if !ok || host == "" {
			continue
		}
		for _, repo := range strings.Split(v, ",") {
			if repo != "" {
				out = append(out, fetch.Source{Host: host, Repo: repo})
			}
		}
	}
	slices.SortFunc(out, func(a, b fetch.Source) int { return strings.Compare(a.Host+"/"+a.Repo, b.Host+"/"+b.Repo) })
	return out
}

// SourceHosts lists the registry hosts that the blobs' source labels name,
// each once, sorted: the registries an operation that fetches missing or
// corrupt blobs of them again may contact.
func SourceHosts(blobs []ContentInfo) []string {
	seen := map[string]bool{}
	for _, b := range blobs {
		for _, src := range sourcesOf(b) {
			seen[src.Host] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}
