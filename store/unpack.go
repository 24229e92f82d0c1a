package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/layers"
)

// Snapshotter opens the overlay snapshotter on first use.
func (s *Local) Snapshotter() (*layers.Snapshotter, error) {
	s.snapOnce.Do(func() {
		db, err := s.Index()
		if err != nil {
			s.snapErr = err
			return
		}
		sn, err := layers.NewSnapshotter(s.root, db)
		if err != nil {
			s.snapErr = err
			return
		}
		sn.Limits, sn.BootID = s.limits, s.bootID
		if err := s.repairStale(context.Background(), sn); err != nil {
			s.snapErr = fmt.Errorf("open snapshotter: %w", err)
			return
		}
		s.snaps = sn
	})
	return s.snaps, s.snapErr
}

// ImageLayers is what one platform manifest of an image is made of.
type ImageLayers struct {
	Manifest ocispec.Descriptor
	Config   ocispec.Descriptor
	Layers   []ocispec.Descriptor
	DiffIDs  []digest.Digest
	ChainIDs []digest.Digest
}

// RootfsID names the image's merged root filesystem: the hex of its top
// chain ID, so images that share all their layers share one rootfs.
func (l ImageLayers) RootfsID() string {
	if len(l.ChainIDs) == 0 {
		return ""
	}
	return l.ChainIDs[len(l.ChainIDs)-1].Encoded()
}

// imageLayers reads a manifest and its config.
func (s *Local) imageLayers(ctx context.Context, md ocispec.Descriptor) (ImageLayers, error) {
	var m ocispec.Manifest
	if _, err := s.readDocument(ctx, md.Digest, &m); err != nil {
		return ImageLayers{}, err
	}
	var cfg ocispec.Image
	if _, err := s.readDocument(ctx, m.Config.Digest, &cfg); err != nil {
		return ImageLayers{}, err
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return ImageLayers{}, fmt.Errorf("manifest %s has %d layers but its config lists %d diff IDs: %w",
			md.Digest, len(m.Layers), len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
	}
	return ImageLayers{Manifest: md, Config: m.Config, Layers: m.Layers, DiffIDs: cfg.RootFS.DiffIDs, ChainIDs: layers.ChainIDs(cfg.RootFS.DiffIDs)}, nil
}

// unpack makes the committed snapshots of every layer, lowest first,
// fetching layers that are not local (lazy images) when a fetcher is set.
// onLayer is told when each layer starts and ends unpacking.
func (s *Local) unpack(ctx context.Context, il ImageLayers, progress ProgressFunc) error {
	sn, err := s.Snapshotter()
	if err != nil {
		return err
	}
	ctx = sn.Limits.ImageContext(ctx)
	parent := ""
	for i, l := range il.Layers {
		chain := il.ChainIDs[i].String()
		if _, err := sn.Stat(ctx, chain); err == nil {
			parent = chain
			continue
		}
		if err := s.ensureLocal(ctx, l.Digest); err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		if progress != nil {
			progress(ProgressEvent{Digest: l.Digest, MediaType: l.MediaType, Total: l.Size, Status: "unpacking"})
		}
		if err := s.unpackLayerBlob(ctx, sn, chain, parent, nil, l, il.DiffIDs[i]); err != nil {
			return err
		}
		if progress != nil {
			progress(ProgressEvent{Digest: l.Digest, MediaType: l.MediaType, Total: l.Size, Done: l.Size, Status: "unpacked"})
		}
		parent = chain
	}
	return nil
}

// unpackLayerBlob makes the committed snapshot chain of a local layer blob;
// below (nil: parent is committed) waits for parent, as in
// layers.Snapshotter.UnpackAbove.
func (s *Local) unpackLayerBlob(ctx context.Context, sn *layers.Snapshotter, chain, parent string, below func(context.Context) error, l ocispec.Descriptor, diffID digest.Digest) error {
	ra, err := s.blobs.ReaderAt(ctx, l.Digest)
	if err != nil {
		return fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	defer ra.Close()
	if _, err := sn.UnpackAbove(ctx, chain, parent, below, io.NewSectionReader(ra, 0, ra.Size()), l.MediaType, diffID); err != nil {
		return fmt.Errorf("unpack layer %s: %w", l.Digest, err)
	}
	return nil
}

// ensureLocal fetches a recorded blob whose file is missing.
func (s *Local) ensureLocal(ctx context.Context, d digest.Digest) error {
	if _, err := s.blobs.Info(ctx, d); err == nil {
		return nil
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	if s.lazy == nil {
		return fmt.Errorf("blob %s is not local and no registry is configured to fetch it: %w", d, errdefs.ErrNotFound)
	}
	return s.lazy(ctx, d, nil)
}

// OpenBlob opens a blob's file for reading, fetching it first when the index
// knows it but the disk does not.
func (s *Local) OpenBlob(ctx context.Context, d digest.Digest) (*os.File, error) {
	if _, err := s.ContentInfo(ctx, d); err != nil {
		return nil, err
	}
	if err := s.ensureLocal(ctx, d); err != nil {
		return nil, err
	}
	p, err := s.blobs.BlobPath(d)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// RootfsLayers returns the snapshot directories of a rootfs id, lowest
// first, unpacking the image that has it when its snapshots are missing.
func (s *Local) RootfsLayers(ctx context.Context, id string) ([]string, error) {
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("rootfs %q: %w", id, errdefs.ErrNotFound)
	}
	sn, err := s.Snapshotter()
	if err != nil {
		return nil, err
	}
	key := "sha256:" + id
	if _, err := sn.Stat(ctx, key); errors.Is(err, errdefs.ErrNotFound) {
		il, ok, err := s.findRootfs(ctx, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("rootfs %s: %w", id, errdefs.ErrNotFound)
		}
		if err := s.unpack(ctx, il, nil); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	lowers, err := sn.Lowers(ctx, key) // top-most first
	if err != nil {
		return nil, err
	}
	out := make([]string, len(lowers))
	for i, l := range lowers {
		out[len(lowers)-1-i] = filepath.Clean(l)
	}
	return out, nil
}

// findRootfs finds the image manifest whose top chain ID is id.
func (s *Local) findRootfs(ctx context.Context, id string) (ImageLayers, bool, error) {
	views, err := s.ImageViews(ctx)
	if err != nil {
		return ImageLayers{}, false, err
	}
	for _, v := range views {
		if v.Layers.RootfsID() == id {
			return v.Layers, true, nil
		}
	}
	return ImageLayers{}, false, nil
}

// ImageView is one image name with the platform manifest it shows.
type ImageView struct {
	Name   string
	Target ocispec.Descriptor
	Layers ImageLayers // zero when the manifest or config is not local
}

// ImageViews lists every image with its platform-selected manifest.
func (s *Local) ImageViews(ctx context.Context) ([]ImageView, error) {
	imgs, err := s.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ImageView, 0, len(imgs))
	for _, img := range imgs {
		v := ImageView{Name: img.Name, Target: img.Target}
		if mans, err := s.imageManifests(ctx, img.Target); err == nil && len(mans) > 0 {
			if il, err := s.imageLayers(ctx, s.pickManifest(mans)); err == nil {
				v.Layers = il
			}
		}
		out = append(out, v)
	}
	return out, nil
}
