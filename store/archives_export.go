package store

import (
	"context"
	"fmt"
	"io"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/archive"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/oci"
)

// exportImage is one image of an export: its record, the manifests chosen
// for the archive and what they are made of.
type exportImage struct {
	rec       index.Image
	manifests []ocispec.Descriptor
	docs      []ocispec.Manifest
}

// ExportImages plans the whole archive first (choosing manifests, fetching
// blobs a lazy pull left remote) so that a failure writes nothing, then
// streams the tar straight from the blob files.
func (s *Local) ExportImages(ctx context.Context, w io.Writer, refs []string, opts ExportOptions) error {
	if len(refs) == 0 {
		return fmt.Errorf("export: no images named: %w", errdefs.ErrInvalidArgument)
	}
	if opts.Platform != "" && opts.AllPlatforms {
		return fmt.Errorf("export: a platform and all platforms exclude each other: %w", errdefs.ErrInvalidArgument)
	}
	var want *oci.Platform
	if opts.Platform != "" {
		p, err := oci.ParsePlatform(opts.Platform, s.host.Spec())
		if err != nil {
			return err
		}
		pl := oci.NewPlatform(p)
		want = &pl
	}
	// A lease keeps every blob the export checks from a concurrent
	// collection until the archive is written.
	ctx, release, err := s.HoldLease(ctx, "export")
	if err != nil {
		return err
	}
	defer release()
	var imgs []exportImage
	for _, ref := range refs {
		img, err := s.planExport(ctx, ref, want, opts)
		if err != nil {
			return fmt.Errorf("export %s: %w", ref, err)
		}
		imgs = append(imgs, img)
	}

	aw := archive.NewWriter(w)
	idx := ocispec.Index{Manifests: make([]ocispec.Descriptor, 0, len(imgs))}
	idx.SchemaVersion = 2
	for _, img := range imgs {
		desc := img.rec.Target
		desc.Annotations = map[string]string{archive.AnnotationImageName: img.rec.Name, archive.AnnotationRefName: refName(img.rec.Name)}
		idx.Manifests = append(idx.Manifests, desc)
	}
	var docker []archive.DockerManifest
	if !opts.SkipDockerManifest {
		docker = dockerManifests(imgs, s.host)
	}
	if err := aw.WriteMetadata(idx, docker); err != nil {
		return err
	}
	for _, img := range imgs {
		if img.rec.Target.Digest != img.manifests[0].Digest || len(img.manifests) > 1 {
			if err := s.exportArchiveBlob(ctx, aw, img.rec.Target); err != nil {
				return err
			}
		}
		for i, md := range img.manifests {
			if err := s.exportArchiveBlob(ctx, aw, md); err != nil {
				return err
			}
			if err := s.exportArchiveBlob(ctx, aw, img.docs[i].Config); err != nil {
				return err
			}
			for _, l := range img.docs[i].Layers {
				if err := s.exportArchiveBlob(ctx, aw, l); err != nil {
					return err
				}
			}
		}
	}
	return aw.Close()
}

func (s *Local) exportArchiveBlob(ctx context.Context, aw *archive.Writer, desc ocispec.Descriptor) error {
	ra, err := s.blobs.ReaderAt(ctx, desc.Digest)
	if err != nil {
		return fmt.Errorf("export %s: %w", desc.Digest, err)
	}
	defer ra.Close()
	return aw.WriteBlob(desc.Digest, ra.Size(), io.NewSectionReader(ra, 0, ra.Size()))
}

// planExport picks the manifests of one image and makes sure every blob
// they reach is local.
func (s *Local) planExport(ctx context.Context, ref string, want *oci.Platform, opts ExportOptions) (exportImage, error) {
	rec, err := s.image(ctx, ref)
	if err != nil {
		return exportImage{}, err
	}
	img := exportImage{rec: rec}
	if err := s.exportReady(ctx, rec.Target.Digest, opts); err != nil {
		return img, err
	}
	if !oci.IsIndex(rec.Target.MediaType) {
		img.manifests = []ocispec.Descriptor{rec.Target}
	} else {
		mans, err := s.indexManifests(ctx, rec.Target)
		if err != nil {
			return img, err
		}
		recorded := func(m ocispec.Descriptor) error {
			if _, err := s.ContentInfo(ctx, m.Digest); err != nil {
				return fmt.Errorf("platform %s (%s) is not in the store; pull the image with --all-platforms first: %w", oci.FormatPlatform(m.Platform), m.Digest, errdefs.ErrNotFound)
			}
			return nil
		}
		switch {
		case opts.AllPlatforms:
			for _, m := range mans {
				if err := recorded(m); err != nil {
					return img, err
				}
			}
			img.manifests = mans
		case want != nil:
			i := want.Best(mans)
			if i < 0 {
				return img, fmt.Errorf("image has no %s manifest in the store: %w", want, errdefs.ErrNotFound)
			}
			if err := recorded(mans[i]); err != nil {
				return img, err
			}
			img.manifests = mans[i : i+1]
		default:
			var local []ocispec.Descriptor
			for _, m := range mans {
				if recorded(m) == nil {
					local = append(local, m)
				}
			}
			if len(local) == 0 {
				return img, fmt.Errorf("image has no %s manifest in the store: %w", s.host, errdefs.ErrNotFound)
			}
			img.manifests = []ocispec.Descriptor{s.pickManifest(local)}
		}
	}
	for _, md := range img.manifests {
		if err := s.exportReady(ctx, md.Digest, opts); err != nil {
			return img, err
		}
		var m ocispec.Manifest
		if _, err := s.readDocument(ctx, md.Digest, &m); err != nil {
			return img, err
		}
		for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
			if err := s.exportReady(ctx, d.Digest, opts); err != nil {
				return img, err
			}
		}
		img.docs = append(img.docs, m)
	}
	return img, nil
}

// exportReady makes sure blob d is on disk, fetching it from its registry
// when a lazy pull left it there, unless the export is local-only.
func (s *Local) exportReady(ctx context.Context, d digest.Digest, opts ExportOptions) error {
	if err := index.AddToLease(ctx, []digest.Digest{d}); err != nil {
		return err
	}
	if _, err := s.blobs.Info(ctx, d); err == nil {
		return nil
	}
	if _, err := s.ContentInfo(ctx, d); err != nil {
		return fmt.Errorf("blob %s is not in the store: %w", d, errdefs.ErrNotFound)
	}
	if opts.LocalOnly {
		return fmt.Errorf("blob %s is not local (the image was pulled lazily) and the export is local-only: %w", d, errdefs.ErrFailedPrecondition)
	}
	return s.fetchRecorded(ctx, opts.RegistryOptions, d)
}

// refName is what containerd puts in org.opencontainers.image.ref.name:
// the tag, or the whole name when it has none.
func refName(name string) string {
	if named, err := reference.ParseNormalizedNamed(name); err == nil {
		if t, ok := named.(reference.Tagged); ok {
			return t.Tag()
		}
	}
	return name
}

// dockerManifests are manifest.json's entries: docker load knows one
// manifest per image, so an image contributes only when one manifest was
// chosen for it (or one of this machine's platform); names are tags only,
// in docker's familiar form.
func dockerManifests(imgs []exportImage, host oci.Platform) []archive.DockerManifest {
	out := []archive.DockerManifest{}
	byManifest := map[digest.Digest]int{}
	for _, img := range imgs {
		i := -1
		if len(img.manifests) == 1 {
			i = 0
		} else {
			i = host.Best(img.manifests)
		}
		if i < 0 {
			continue
		}
		md, m := img.manifests[i], img.docs[i]
		var tags []string
		if named, err := reference.ParseNormalizedNamed(img.rec.Name); err == nil {
			if _, ok := named.(reference.Tagged); ok {
				tags = []string{reference.FamiliarString(named)}
			}
		}
		if j, ok := byManifest[md.Digest]; ok {
			out[j].RepoTags = append(out[j].RepoTags, tags...)
			continue
		}
		e := archive.DockerManifest{Config: archive.BlobPath(m.Config.Digest), RepoTags: tags}
		for _, l := range m.Layers {
			e.Layers = append(e.Layers, archive.BlobPath(l.Digest))
		}
		byManifest[md.Digest] = len(out)
		out = append(out, e)
	}
	return out
}
