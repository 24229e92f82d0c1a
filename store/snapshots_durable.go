package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/layers"
)

// repairStale runs when the snapshotter opens. Snapshots are written
// through the page cache and synced later (layers.Snapshotter.SyncSoon),
// so a power loss can leave one incomplete behind a durable record: a
// snapshot that an earlier boot left unsynced is unpacked again from its
// verified blob, or, when no image names its layer or the blob is gone,
// removed with what stacks on it (unpacked again when needed). Snapshots
// this boot left unsynced (a process that ended before its sync) are
// synced soon.
func (s *Local) repairStale(ctx context.Context, sn *layers.Snapshotter) error {
	stale, err := sn.Stale(ctx)
	if err != nil {
		return err
	}
	if len(stale) == 0 {
		sn.SyncSoon()
		return nil
	}
	byChain, err := s.layersByChain(ctx)
	if err != nil {
		return err
	}
	var children map[string][]string
	for _, r := range stale {
		if _, err := sn.Stat(ctx, r.Key); errors.Is(err, errdefs.ErrNotFound) {
			continue // removed with its parent
		}
		why := fmt.Errorf("no image names its layer blob: %w", errdefs.ErrNotFound)
		if l, ok := byChain[r.Key]; ok {
			why = s.rebuildSnapshot(ctx, sn, r.Key, l)
		}
		if why == nil {
			slog.Info("rebuilt a snapshot that an earlier boot had not synced", "key", r.Key)
			s.noteRepair("snapshot", r.Key, "unpacked again: an earlier boot wrote it and had not synced it (done whenever the store is opened after a reboot)")
			continue
		}
		if children == nil {
			if children, err = snapshotChildren(ctx, sn); err != nil {
				return err
			}
		}
		if rerr := removeSnapshotTree(ctx, sn, r.Key, children); rerr != nil {
			return fmt.Errorf("remove snapshot %s that an earlier boot had not synced: %w", r.Key, rerr)
		}
		slog.Warn("removed a snapshot that an earlier boot had not synced", "key", r.Key, "reason", why)
		s.noteRepair("snapshot", r.Key, "removed: an earlier boot wrote it and had not synced it, and rebuilding it failed: "+why.Error()+" (unpacked again when needed)")
	}
	return sn.Sync(ctx)
}

func (s *Local) rebuildSnapshot(ctx context.Context, sn *layers.Snapshotter, key string, l ocispec.Descriptor) error {
	ra, err := s.blobs.ReaderAt(ctx, l.Digest)
	if err != nil {
		return fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	defer ra.Close()
	return sn.Rebuild(ctx, key, io.NewSectionReader(ra, 0, ra.Size()), l.MediaType)
}

// layersByChain maps the chain ID of every layer of every local image
// manifest to the layer's descriptor.
func (s *Local) layersByChain(ctx context.Context) (map[string]ocispec.Descriptor, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	out := map[string]ocispec.Descriptor{}
	err = db.Images().List(ctx, "", func(_ string, rec index.Image) error {
		mans, err := s.imageManifests(ctx, rec.Target)
		if err != nil {
			return nil // checked and reported by check, not needed here
		}
		for _, md := range mans {
			il, err := s.imageLayers(ctx, md)
			if err != nil {
				continue
			}
			for i, c := range il.ChainIDs {
				out[c.String()] = il.Layers[i]
			}
		}
		return nil
	})
	return out, err
}

func snapshotChildren(ctx context.Context, sn *layers.Snapshotter) (map[string][]string, error) {
	recs, err := sn.List(ctx)
	if err != nil {
		return nil, err
	}
	children := map[string][]string{}
	for _, r := range recs {
		children[r.Parent] = append(children[r.Parent], r.Key)
	}
	return children, nil
}

// removeSnapshotTree removes key after its descendants, top-most first.
func removeSnapshotTree(ctx context.Context, sn *layers.Snapshotter, key string, children map[string][]string) error {
	for _, ch := range children[key] {
		if err := removeSnapshotTree(ctx, sn, ch, children); err != nil {
			return err
		}
	}
	err := sn.Remove(ctx, key)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	return err
}

// noteRepair keeps what opening the store repaired, for the next check.
func (s *Local) noteRepair(kind, name, detail string) {
	s.repairsMu.Lock()
	defer s.repairsMu.Unlock()
	s.repairs = append(s.repairs, CheckFinding{Kind: kind, Name: name, Detail: detail})
}

// takeRepairs returns and forgets what opening the store repaired.
func (s *Local) takeRepairs() []CheckFinding {
	s.repairsMu.Lock()
	defer s.repairsMu.Unlock()
	out := s.repairs
	s.repairs = nil
	return out
}
