package store

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/layers"
	"github.com/casfs/casfs/oci"
)

func snapshotInfo(r index.Snapshot) SnapshotInfo {
	return SnapshotInfo{Key: r.Key, Parent: r.Parent, Kind: string(r.Kind), ID: r.ID, Labels: r.Labels, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

func (s *Local) ListSnapshots(ctx context.Context) ([]SnapshotInfo, error) {
	sn, err := s.Snapshotter()
	if err != nil {
		return nil, err
	}
	recs, err := sn.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]SnapshotInfo, len(recs))
	for i, r := range recs {
		out[i] = snapshotInfo(r)
	}
	return out, nil
}

func (s *Local) RemoveSnapshot(ctx context.Context, key string) error {
	sn, err := s.Snapshotter()
	if err != nil {
		return err
	}
	mounts, err := s.ListImageMounts(ctx)
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if m.Writable == key {
			return fmt.Errorf("remove snapshot %s: it is the writable layer of the image mount at %s (casfs image unmount --rm removes it): %w", key, m.Target, errdefs.ErrInUse)
		}
		if m.Mounted && m.Snapshot == key {
			return fmt.Errorf("remove snapshot %s: the image mount at %s shows it: %w", key, m.Target, errdefs.ErrInUse)
		}
	}
	if err := sn.Remove(ctx, key); err != nil {
		return err
	}
	s.changed()
	return nil
}

func (s *Local) SnapshotUsage(ctx context.Context, key string) ([]SnapshotUsage, error) {
	sn, err := s.Snapshotter()
	if err != nil {
		return nil, err
	}
	keys := []string{key}
	if key == "" {
		recs, err := sn.List(ctx)
		if err != nil {
			return nil, err
		}
		keys = keys[:0]
		for _, r := range recs {
			keys = append(keys, r.Key)
		}
	}
	out := make([]SnapshotUsage, 0, len(keys))
	for _, k := range keys {
		size, inodes, err := sn.Usage(ctx, k)
		if errors.Is(err, errdefs.ErrNotFound) && key == "" {
			continue // removed while listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, SnapshotUsage{Key: k, Size: size, Inodes: inodes})
	}
	return out, nil
}

// imageLayersOf resolves ref to the platform manifest this machine uses.
func (s *Local) imageLayersOf(ctx context.Context, ref string) (string, ImageLayers, error) {
	rec, err := s.image(ctx, ref)
	if err != nil {
		return "", ImageLayers{}, err
	}
	mans, err := s.imageManifests(ctx, rec.Target)
	if err != nil {
		return rec.Name, ImageLayers{}, fmt.Errorf("image %s: %w", rec.Name, err)
	}
	if len(mans) == 0 {
		return rec.Name, ImageLayers{}, fmt.Errorf("image %s: no manifest of it is local: %w", rec.Name, errdefs.ErrNotFound)
	}
	il, err := s.imageLayers(ctx, s.pickManifest(mans))
	if err != nil {
		return rec.Name, ImageLayers{}, fmt.Errorf("image %s: %w", rec.Name, err)
	}
	return rec.Name, il, nil
}

func (s *Local) CheckImage(ctx context.Context, ref string, opts CheckOptions) (CheckReport, error) {
	rec, err := s.image(ctx, ref)
	if err != nil {
		return CheckReport{}, err
	}
	rep := CheckReport{Image: rec.Name, Problems: []Problem{}}
	problem := func(d digest.Digest, format string, a ...any) {
		rep.Problems = append(rep.Problems, Problem{Digest: d, Reason: fmt.Sprintf(format, a...)})
	}
	// present checks one blob's file; a document must also parse, which
	// imageLayers does with its digest checked.
	present := func(d ocispec.Descriptor) bool {
		rep.Blobs++
		info, err := s.blobs.Info(ctx, d.Digest)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			problem(d.Digest, "blob is missing from the store")
			return false
		case err != nil:
			problem(d.Digest, "blob cannot be read: %v", err)
			return false
		case info.Size != d.Size:
			problem(d.Digest, "blob is %d bytes, its descriptor says %d", info.Size, d.Size)
			return false
		}
		return true
	}
	target := rec.Target
	md := target
	if oci.IsIndex(target.MediaType) {
		if !present(target) {
			return rep, nil
		}
		mans, err := s.imageManifests(ctx, target)
		if err != nil {
			problem(target.Digest, "index cannot be read: %v", err)
			return rep, nil
		}
		if len(mans) == 0 {
			problem(target.Digest, "no manifest of the index is in the store")
			return rep, nil
		}
		md = s.pickManifest(mans)
	}
	rep.Manifest = md.Digest
	if !present(md) {
		return rep, nil
	}
	var m ocispec.Manifest
	if _, err := s.readDocument(ctx, md.Digest, &m); err != nil {
		problem(md.Digest, "manifest cannot be read: %v", err)
		return rep, nil
	}
	if !present(m.Config) {
		return rep, nil
	}
	il, err := s.imageLayers(ctx, md)
	if err != nil {
		problem(m.Config.Digest, "config cannot be read: %v", err)
		return rep, nil
	}
	sn, err := s.Snapshotter()
	if err != nil {
		return rep, err
	}
	for i, l := range il.Layers {
		local := present(l)
		rep.Layers++
		chain := il.ChainIDs[i].String()
		snap, err := sn.Stat(ctx, chain)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			problem(l.Digest, "layer %d is not unpacked: no snapshot %s", i, chain)
		case err != nil:
			return rep, err
		case snap.Kind != index.SnapshotCommitted:
			problem(l.Digest, "layer %d: snapshot %s is %s, not committed", i, chain, snap.Kind)
		case snap.Labels[layers.LabelDiffID] != il.DiffIDs[i].String():
			problem(l.Digest, "layer %d: snapshot %s records diff ID %q, the config says %s", i, chain, snap.Labels[layers.LabelDiffID], il.DiffIDs[i])
		}
		if opts.VerifyDiffs && local {
			if reason := s.verifyLayer(ctx, l, il.DiffIDs[i]); reason != "" {
				problem(l.Digest, "layer %d: %s", i, reason)
			}
		}
	}
	return rep, nil
}

// verifyLayer re-hashes a layer blob and its uncompressed stream; it
// returns what is wrong, or "".
func (s *Local) verifyLayer(ctx context.Context, l ocispec.Descriptor, diffID digest.Digest) string {
	ra, err := s.blobs.ReaderAt(ctx, l.Digest)
	if err != nil {
		return fmt.Sprintf("blob cannot be read: %v", err)
	}
	defer ra.Close()
	blobHash := l.Digest.Algorithm().Hash()
	blob := io.NewSectionReader(ra, 0, ra.Size())
	rc, err := layers.Decompress(l.MediaType, io.TeeReader(blob, blobHash))
	if err != nil {
		return fmt.Sprintf("cannot decompress: %v", err)
	}
	defer rc.Close()
	diffHash := diffID.Algorithm().Hash()
	_, derr := io.Copy(diffHash, ctxReader{ctx, rc})
	if ctx.Err() != nil {
		return ctx.Err().Error()
	}
	// Whatever the decompressor left unread still belongs to the blob.
	_, _ = io.Copy(blobHash, blob)
	if got := digest.NewDigest(l.Digest.Algorithm(), blobHash); got != l.Digest {
		return fmt.Sprintf("blob content is %s, not what its name says (corrupt)", got)
	}
	if derr != nil {
		return fmt.Sprintf("cannot decompress: %v", derr)
	}
	if got := digest.NewDigest(diffID.Algorithm(), diffHash); got != diffID {
		return fmt.Sprintf("uncompressed layer is %s, the config says %s", got, diffID)
	}
	return ""
}

// ctxReader stops a long read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
