package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/oci"
)

// maxDocument bounds the manifests, indexes and configs the store parses.
const maxDocument = 4 << 20

// NormalizeName turns what a user types into the name images are recorded
// under, as docker does: nginx:alpine -> docker.io/library/nginx:alpine.
func NormalizeName(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid image reference (%v): %w", ref, err, errdefs.ErrInvalidArgument)
	}
	return named.String(), nil
}

// readDocument reads a small JSON blob (manifest, index, config) into v.
func (s *Local) readDocument(ctx context.Context, d digest.Digest, v any) ([]byte, error) {
	ra, err := s.blobs.ReaderAt(ctx, d)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	if ra.Size() > maxDocument {
		return nil, fmt.Errorf("%s is %d bytes, larger than a document may be (%d): %w", d, ra.Size(), maxDocument, errdefs.ErrFailedPrecondition)
	}
	b, err := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
	if err != nil {
		return nil, err
	}
	if digest.FromBytes(b) != d {
		return nil, fmt.Errorf("%s: content does not match its digest: %w", d, errdefs.ErrDigestMismatch)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			return nil, fmt.Errorf("%s is not valid JSON: %v: %w", d, err, errdefs.ErrInvalidArgument)
		}
	}
	return b, nil
}

// imageManifests returns the manifests an image record reaches through
// its index and any nested ones that are present locally (an index may
// name platforms that were not pulled).
func (s *Local) imageManifests(ctx context.Context, target ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return s.manifestsUnder(ctx, target, true)
}

// indexManifests returns every manifest entry that target and its local
// nested indexes name, whether its blob is local or not.
func (s *Local) indexManifests(ctx context.Context, target ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return s.manifestsUnder(ctx, target, false)
}

func (s *Local) manifestsUnder(ctx context.Context, target ocispec.Descriptor, localOnly bool) ([]ocispec.Descriptor, error) {
	if !oci.IsIndex(target.MediaType) {
		return []ocispec.Descriptor{target}, nil
	}
	read := func(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
		return s.readDocument(ctx, d.Digest, nil)
	}
	keep := func(entries []ocispec.Descriptor) []ocispec.Descriptor {
		var out []ocispec.Descriptor
		for _, e := range entries {
			if !localOnly && !oci.IsIndex(e.MediaType) {
				out = append(out, e)
			} else if _, err := s.blobs.Info(ctx, e.Digest); err == nil {
				out = append(out, e)
			}
		}
		return out
	}
	return oci.Manifests(ctx, read, target, keep)
}

func (s *Local) imageInfo(ctx context.Context, rec index.Image) ImageInfo {
	info := ImageInfo{Name: rec.Name, Target: rec.Target, Labels: rec.Labels, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt}
	mans, err := s.imageManifests(ctx, rec.Target)
	if err != nil {
		return info
	}
	if oci.IsIndex(rec.Target.MediaType) {
		info.Size += rec.Target.Size
	}
	for _, md := range mans {
		var m ocispec.Manifest
		if _, err := s.readDocument(ctx, md.Digest, &m); err != nil {
			continue
		}
		info.Size += md.Size + m.Config.Size
		for _, l := range m.Layers {
			info.Size += l.Size
		}
		p := md.Platform
		if p == nil {
			var cfg ocispec.Image
			if _, err := s.readDocument(ctx, m.Config.Digest, &cfg); err == nil {
				p = &cfg.Platform
			}
		}
		if ps := oci.FormatPlatform(p); ps != "" {
			info.Platforms = append(info.Platforms, ps)
		}
	}
	if !oci.IsIndex(rec.Target.MediaType) {
		return info
	}
	all, err := s.indexManifests(ctx, rec.Target)
	if err != nil {
		return info
	}
	local := map[digest.Digest]bool{}
	for _, md := range mans {
		local[md.Digest] = true
	}
	for _, md := range all {
		if ps := oci.FormatPlatform(md.Platform); !local[md.Digest] && ps != "" && ps != "unknown/unknown" {
			info.RemotePlatforms = append(info.RemotePlatforms, ps)
		}
	}
	return info
}

func (s *Local) ListImages(ctx context.Context) ([]ImageInfo, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	var out []ImageInfo
	err = db.Images().List(ctx, "", func(_ string, rec index.Image) error {
		out = append(out, s.imageInfo(ctx, rec))
		return nil
	})
	return out, err
}

// image looks up the record of ref (normalized).
func (s *Local) image(ctx context.Context, ref string) (index.Image, error) {
	name, err := NormalizeName(ref)
	if err != nil {
		return index.Image{}, err
	}
	db, err := s.Index()
	if err != nil {
		return index.Image{}, err
	}
	rec, err := db.Images().Get(ctx, name)
	if errors.Is(err, errdefs.ErrNotFound) {
		return rec, fmt.Errorf("image %s: %w", name, errdefs.ErrNotFound)
	}
	return rec, err
}

func (s *Local) GetImage(ctx context.Context, ref, platform string) (ImageDetail, error) {
	rec, err := s.image(ctx, ref)
	if err != nil {
		return ImageDetail{}, err
	}
	d := ImageDetail{ImageInfo: s.imageInfo(ctx, rec)}
	mans, err := s.imageManifests(ctx, rec.Target)
	if err != nil {
		return d, err
	}
	if oci.IsIndex(rec.Target.MediaType) {
		if d.Index, err = s.readDocument(ctx, rec.Target.Digest, nil); err != nil {
			return d, err
		}
	}
	var md ocispec.Descriptor
	switch {
	case platform != "":
		p, err := oci.ParsePlatform(platform, s.host.Spec())
		if err != nil {
			return d, err
		}
		i := oci.NewPlatform(p).Best(mans)
		if i < 0 {
			return d, fmt.Errorf("image %s has no local manifest for platform %s (it has %s): %w", rec.Name, oci.FormatPlatform(&p), manifestPlatforms(mans), errdefs.ErrNotFound)
		}
		md = mans[i]
	case len(mans) == 0:
		return d, nil
	default:
		md = s.pickManifest(mans)
	}
	var m ocispec.Manifest
	if d.Manifest, err = s.readDocument(ctx, md.Digest, &m); err != nil {
		return d, err
	}
	d.Config, err = s.readDocument(ctx, m.Config.Digest, nil)
	d.Layers = s.layerStates(ctx, m.Layers)
	return d, err
}

// manifestPlatforms lists the platforms of mans for an error message.
func manifestPlatforms(mans []ocispec.Descriptor) string {
	var ps []string
	for _, m := range mans {
		if p := oci.FormatPlatform(m.Platform); p != "" {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return "none"
	}
	return strings.Join(ps, ", ")
}

// pickManifest prefers this machine's platform among local manifests.
func (s *Local) pickManifest(mans []ocispec.Descriptor) ocispec.Descriptor {
	if i := s.host.Best(mans); i >= 0 {
		return mans[i]
	}
	return mans[0]
}

func (s *Local) TagImage(ctx context.Context, src string, dsts []string) error {
	rec, err := s.image(ctx, src)
	if err != nil {
		return err
	}
	names := make([]string, len(dsts))
	for i, d := range dsts {
		if names[i], err = NormalizeName(d); err != nil {
			return err
		}
		// A name pinned by digest must name the image's own digest.
		if _, pinned, ok := strings.Cut(names[i], "@"); ok && digest.Digest(pinned) != rec.Target.Digest {
			return fmt.Errorf("tag %s: the name pins %s but %s is %s: %w", names[i], pinned, rec.Name, rec.Target.Digest, errdefs.ErrDigestMismatch)
		}
	}
	db, _ := s.Index()
	now := time.Now().UTC()
	for _, name := range names {
		rec := index.Image{Name: name, Target: rec.Target, Labels: rec.Labels, CreatedAt: now, UpdatedAt: now}
		if err := db.Images().Put(ctx, name, rec); err != nil {
			return fmt.Errorf("tag %s: %w", name, err)
		}
	}
	s.changed()
	return nil
}

func (s *Local) LabelImage(ctx context.Context, ref string, set map[string]string, del []string) (ImageInfo, error) {
	if err := checkLabels(set); err != nil {
		return ImageInfo{}, err
	}
	rec, err := s.image(ctx, ref)
	if err != nil {
		return ImageInfo{}, err
	}
	db, _ := s.Index()
	rec, err = db.Images().Update(ctx, rec.Name, func(img *index.Image) error {
		img.Labels = editLabels(img.Labels, set, del)
		img.UpdatedAt = time.Now().UTC()
		return nil
	})
	if err != nil {
		return ImageInfo{}, fmt.Errorf("label %s: %w", ref, err)
	}
	s.changed()
	return s.imageInfo(ctx, rec), nil
}

func (s *Local) RemoveImage(ctx context.Context, ref string) error {
	rec, err := s.image(ctx, ref)
	if err != nil {
		return err
	}
	db, _ := s.Index()
	if err := db.Images().Delete(ctx, rec.Name); err != nil {
		return fmt.Errorf("remove %s: %w", rec.Name, err)
	}
	s.changed()
	return nil
}

// recordImage creates or moves the name to target, keeping its creation
// time and labels when it existed.
func (s *Local) recordImage(ctx context.Context, name string, target ocispec.Descriptor) (index.Image, error) {
	db, err := s.Index()
	if err != nil {
		return index.Image{}, err
	}
	now := time.Now().UTC()
	img := index.Image{Name: name, Target: target, CreatedAt: now, UpdatedAt: now}
	if old, err := db.Images().Get(ctx, name); err == nil {
		img.CreatedAt, img.Labels = old.CreatedAt, old.Labels
	}
	if err := db.Images().Put(ctx, name, img); err != nil {
		return index.Image{}, fmt.Errorf("record image %s: %w", name, err)
	}
	return img, nil
}
