package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

// gcChunk bounds the deletions of one index transaction, well under what
// badger takes in one (about 13,000 deletes; each of ours also reads).
const gcChunk = 2000

// gcPlan is what a collection is about to delete.
type gcPlan struct {
	images []index.Image
	leases []index.Lease
	blobs  []plannedBlob
	snaps  []index.Snapshot // children before their parents
}

type plannedBlob struct {
	digest    digest.Digest
	size      int64 // of the file; 0 when there is none
	recorded  bool
	updatedAt int64 // of the record, UnixNano
}

func (s *Local) Collect(ctx context.Context, opts CollectOptions) (GCReport, error) {
	content, snaps := opts.Content, opts.Snapshots
	if !content && !snaps {
		content, snaps = true, true
	}
	s.gc.mu.Lock()
	defer s.gc.mu.Unlock()
	g, err := s.loadGraph(ctx)
	if err != nil {
		return GCReport{}, err
	}
	m := newMarker(s, g)
	m.roots(nil)
	if err := m.run(ctx); err != nil {
		return GCReport{}, err
	}
	p := planSweep(g, m, nil, content, snaps)
	if content && snaps {
		for _, l := range g.leases {
			if g.expired(l) {
				p.leases = append(p.leases, l)
			}
		}
	}
	rep, err := s.execute(ctx, g, p, opts.DryRun)
	if err == nil && content {
		gone := map[digest.Digest]bool{}
		for _, b := range p.blobs {
			gone[b.digest] = true
		}
		rep.LazyCaches = s.sweepLazyCaches(ctx, gone, opts.DryRun)
		for _, c := range rep.LazyCaches {
			rep.Reclaimed += c.Size
		}
	}
	return rep, err
}

func (s *Local) PruneImages(ctx context.Context, opts ImagePruneOptions) (GCReport, error) {
	s.gc.mu.Lock()
	defer s.gc.mu.Unlock()
	g, err := s.loadGraph(ctx)
	if err != nil {
		return GCReport{}, err
	}
	victims := pruneCandidates(g, opts.All)
	// What the pruned images reach is the most this prune may remove;
	// of that, what the remaining roots still reach stays.
	scope := newMarker(s, g)
	exclude := map[string]bool{}
	for _, img := range victims {
		exclude[img.Name] = true
		scope.blob(img.Target.Digest, img.Target.MediaType)
	}
	if err := scope.run(ctx); err != nil {
		return GCReport{}, err
	}
	m := newMarker(s, g)
	m.roots(exclude)
	if err := m.run(ctx); err != nil {
		return GCReport{}, err
	}
	p := planSweep(g, m, scope, true, true)
	p.images = victims
	return s.execute(ctx, g, p, opts.DryRun)
}

// pruneCandidates picks the images `image prune` removes: without all,
// digest-only names (repo@sha256:...) whose target a tagged name also
// points at; with all, every image that no image mount and no live lease
// uses (casfs has no containers; a mount is the nearest thing).
func pruneCandidates(g *gcGraph, all bool) []index.Image {
	tagged := map[digest.Digest]bool{}
	for _, img := range g.images {
		if !digestOnly(img.Name) {
			tagged[img.Target.Digest] = true
		}
	}
	used := map[string]bool{}
	leased := map[digest.Digest]bool{}
	for _, l := range g.leases {
		if g.expired(l) {
			continue
		}
		if n := l.Labels[labelMountImage]; n != "" {
			used[n] = true
		}
		for _, d := range l.Blobs {
			leased[d] = true
		}
	}
	var out []index.Image
	for _, img := range g.images {
		switch {
		case all && !used[img.Name] && !leased[img.Target.Digest]:
			out = append(out, img)
		case !all && digestOnly(img.Name) && tagged[img.Target.Digest]:
			out = append(out, img)
		}
	}
	return out
}

func digestOnly(name string) bool {
	r, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return false
	}
	_, isTagged := r.(reference.Tagged)
	_, isDigested := r.(reference.Digested)
	return isDigested && !isTagged
}

// planSweep lists what m did not mark (and, with a scope, what the scope
// marked) among blob records, blob files and committed snapshots.
func planSweep(g *gcGraph, m, scope *marker, content, snaps bool) gcPlan {
	var p gcPlan
	if content {
		seen := map[digest.Digest]bool{}
		add := func(d digest.Digest) {
			if seen[d] || m.blobs[d] || (scope != nil && !scope.blobs[d]) {
				return
			}
			seen[d] = true
			rec, recorded := g.blobs[d]
			p.blobs = append(p.blobs, plannedBlob{digest: d, size: g.files[d], recorded: recorded, updatedAt: rec.updatedAt.UnixNano()})
		}
		for d := range g.blobs {
			add(d)
		}
		for d := range g.files {
			add(d)
		}
		slices.SortFunc(p.blobs, func(a, b plannedBlob) int { return strings.Compare(string(a.digest), string(b.digest)) })
	}
	if snaps {
		depth := map[string]int{}
		for k, sn := range g.snaps {
			if m.snaps[k] || sn.Kind != index.SnapshotCommitted || (scope != nil && !scope.snaps[k]) {
				continue
			}
			n := 0
			for q, hops := sn.Parent, 0; q != "" && hops < len(g.snaps); q, hops = g.snaps[q].Parent, hops+1 {
				n++
			}
			depth[k] = n
			p.snaps = append(p.snaps, sn)
		}
		slices.SortFunc(p.snaps, func(a, b index.Snapshot) int {
			if d := depth[b.Key] - depth[a.Key]; d != 0 {
				return d
			}
			return strings.Compare(a.Key, b.Key)
		})
	}
	return p
}

// execute deletes what p lists, records before files, in transactions of
// bounded size. Anything whose record changed since it was read is kept.
func (s *Local) execute(ctx context.Context, g *gcGraph, p gcPlan, dryRun bool) (GCReport, error) {
	rep := GCReport{DryRun: dryRun}
	if dryRun {
		for _, img := range p.images {
			rep.Images = append(rep.Images, img.Name)
		}
		for _, l := range p.leases {
			rep.Leases = append(rep.Leases, l.ID)
		}
		for _, b := range p.blobs {
			rep.Blobs = append(rep.Blobs, RemovedBlob{Digest: b.digest, Size: b.size})
			rep.Reclaimed += b.size
		}
		for _, sn := range p.snaps {
			rep.Snapshots = append(rep.Snapshots, RemovedSnapshot{Key: sn.Key, Size: sn.Size})
			rep.Reclaimed += sn.Size
		}
		return rep, nil
	}
	db, err := s.Index()
	if err != nil {
		return rep, err
	}
	changed := false
	defer func() {
		if changed {
			s.changed()
		}
	}()

	for chunk := range slices.Chunk(p.images, gcChunk) {
		var done []string
		err := db.Update(ctx, func(tx *index.Tx) error {
			done = done[:0]
			t := index.TxTable(tx, db.Images())
			for _, img := range chunk {
				cur, err := t.Get(img.Name)
				if err != nil || !cur.UpdatedAt.Equal(img.UpdatedAt) || cur.Target.Digest != img.Target.Digest {
					continue // gone, or recorded anew since: not ours to remove
				}
				if err := t.Delete(img.Name); err != nil {
					return err
				}
				done = append(done, img.Name)
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("prune images: %w", err)
		}
		rep.Images = append(rep.Images, done...)
		changed = changed || len(done) > 0
	}

	for chunk := range slices.Chunk(p.leases, gcChunk) {
		var done []string
		err := db.Update(ctx, func(tx *index.Tx) error {
			done = done[:0]
			t := index.TxTable(tx, db.Leases())
			for _, l := range chunk {
				cur, err := t.Get(l.ID)
				if err != nil || !g.expired(cur) {
					continue
				}
				if err := t.Delete(l.ID); err != nil {
					return err
				}
				done = append(done, l.ID)
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("garbage collection: remove expired leases: %w", err)
		}
		rep.Leases = append(rep.Leases, done...)
	}

	for chunk := range slices.Chunk(p.blobs, gcChunk) {
		var gone []plannedBlob
		err := db.Update(ctx, func(tx *index.Tx) error {
			gone = gone[:0]
			t := index.TxTable(tx, db.Blobs())
			for _, b := range chunk {
				cur, err := t.Get(b.digest.String())
				switch {
				case errors.Is(err, errdefs.ErrNotFound):
					gone = append(gone, b) // no record (any more): the file alone is garbage
					continue
				case err != nil:
					return err
				case !b.recorded || cur.UpdatedAt.UnixNano() != b.updatedAt:
					continue // recorded or touched since we looked
				}
				if err := t.Delete(b.digest.String()); err != nil {
					return err
				}
				gone = append(gone, b)
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("garbage collection: remove blob records: %w", err)
		}
		// Files only once their records are gone, so the index never
		// names a blob that a collection has deleted.
		for _, b := range gone {
			if _, ok := g.files[b.digest]; ok {
				if err := s.blobs.Delete(ctx, b.digest); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
					return rep, fmt.Errorf("garbage collection: %w", err)
				}
			}
			rep.Blobs = append(rep.Blobs, RemovedBlob{Digest: b.digest, Size: b.size})
			rep.Reclaimed += b.size
		}
		changed = changed || len(gone) > 0
	}

	if len(p.snaps) > 0 {
		sn, err := s.Snapshotter()
		if err != nil {
			return rep, err
		}
		for _, rec := range p.snaps {
			err := sn.Remove(ctx, rec.Key)
			if errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrFailedPrecondition) {
				slog.Debug("garbage collection kept a snapshot that changed", "key", rec.Key, "err", err)
				continue
			}
			if err != nil {
				return rep, fmt.Errorf("garbage collection: %w", err)
			}
			rep.Snapshots = append(rep.Snapshots, RemovedSnapshot{Key: rec.Key, Size: rec.Size})
			rep.Reclaimed += rec.Size
			changed = true
		}
	}
	return rep, nil
}
