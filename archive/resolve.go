package archive

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// Image is one image an archive names.
type Image struct {
	// Names are full references as the archive gives them
	// (io.containerd.image.name, or manifest.json RepoTags); not normalized.
	Names []string
	// RefName is org.opencontainers.image.ref.name when no full name was
	// given: often only a tag, to be combined with a base name.
	RefName string
	Target  ocispec.Descriptor
	// Manifests are the image manifests the archive holds for Target.
	Manifests []ocispec.Descriptor
}

// Plan is what importing an archive makes visible.
type Plan struct {
	Format string // "oci" (index.json) or "docker" (manifest.json only)
	Images []Image
	// Blobs are the staged blobs the images reach, with their media types.
	Blobs map[digest.Digest]ocispec.Descriptor
	// Generated are documents that are not in the archive but made from it
	// (docker schema2 manifests for docker-archive entries); they are also
	// in Blobs.
	Generated map[digest.Digest][]byte
}

// Resolve checks that what Read found forms complete images and returns
// them. An OCI layout (index.json) wins over docker's manifest.json, which
// then only contributes names.
func (c *Contents) Resolve() (*Plan, error) {
	p := &Plan{Blobs: map[digest.Digest]ocispec.Descriptor{}, Generated: map[digest.Digest][]byte{}}
	switch {
	case c.Index != nil:
		p.Format = "oci"
		return p, c.resolveOCI(p)
	case c.DockerManifest != nil:
		p.Format = "docker"
		return p, c.resolveDocker(p)
	}
	return nil, fmt.Errorf("unknown archive format: it has neither index.json (OCI layout) nor manifest.json (docker-archive): %w", errdefs.ErrInvalidArgument)
}

func (c *Contents) resolveOCI(p *Plan) error {
	if c.Layout != nil {
		var l ocispec.ImageLayout
		if err := json.Unmarshal(c.Layout, &l); err != nil || l.Version == "" {
			return fmt.Errorf("oci-layout is not an OCI layout file: %w", errdefs.ErrInvalidArgument)
		}
		if l.Version != ocispec.ImageLayoutVersion {
			return fmt.Errorf("oci-layout version %q is not supported (want %s): %w", l.Version, ocispec.ImageLayoutVersion, errdefs.ErrNotImplemented)
		}
	}
	var idx ocispec.Index
	if err := json.Unmarshal(c.Index, &idx); err != nil {
		return fmt.Errorf("index.json is not valid JSON: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if idx.SchemaVersion != 2 {
		return fmt.Errorf("index.json has schemaVersion %d, want 2: %w", idx.SchemaVersion, errdefs.ErrInvalidArgument)
	}
	if len(idx.Manifests) == 0 {
		return fmt.Errorf("index.json names no images: %w", errdefs.ErrInvalidArgument)
	}
	var dockerNames map[digest.Digest][]string // config digest -> RepoTags
	if c.DockerManifest != nil {
		dockerNames = c.dockerNamesByConfig()
	}
	for _, desc := range idx.Manifests {
		if _, ok := c.Sizes[desc.Digest]; !ok {
			return fmt.Errorf("index.json names %s, which is not in the archive: %w", desc.Digest, errdefs.ErrNotFound)
		}
		mans, err := c.walk(p, desc, 0)
		if err != nil {
			return err
		}
		img := Image{Target: desc, Manifests: mans}
		img.Target.Annotations = nil
		if n := desc.Annotations[AnnotationImageName]; n != "" {
			img.Names = []string{n}
		} else if n := desc.Annotations[AnnotationRefName]; n != "" {
			img.RefName = n
		}
		if len(img.Names) == 0 && img.RefName == "" && len(mans) == 1 {
			if m, err := c.manifest(mans[0]); err == nil {
				img.Names = dockerNames[m.Config.Digest]
			}
		}
		p.Images = append(p.Images, img)
	}
	return nil
}

// walk checks desc and everything below it; it returns the image manifests
// found. An index may lack some of its manifests (an export of chosen
// platforms), but not all of them.
func (c *Contents) walk(p *Plan, desc ocispec.Descriptor, depth int) ([]ocispec.Descriptor, error) {
	if depth > 4 {
		return nil, fmt.Errorf("%s: indexes nest too deep: %w", desc.Digest, errdefs.ErrInvalidArgument)
	}
	if err := c.check(desc); err != nil {
		return nil, err
	}
	b, ok := c.Docs[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("%s (%s) is not a JSON document: %w", desc.Digest, desc.MediaType, errdefs.ErrInvalidArgument)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("%s is not valid JSON: %w", desc.Digest, errdefs.ErrInvalidArgument)
	}
	isIndex := oci.IsIndex(desc.MediaType) || (desc.MediaType == "" && oci.IsIndex(oci.Sniff(b)))
	if !isIndex {
		if err := c.walkManifest(p, desc); err != nil {
			return nil, err
		}
		return []ocispec.Descriptor{desc}, nil
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("index %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	p.Blobs[desc.Digest] = plain(desc)
	var out []ocispec.Descriptor
	for _, m := range idx.Manifests {
		if _, ok := c.Sizes[m.Digest]; !ok {
			continue // a platform left out of the export
		}
		mans, err := c.walk(p, m, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, mans...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("index %s: none of its %d manifests is in the archive: %w", desc.Digest, len(idx.Manifests), errdefs.ErrNotFound)
	}
	return out, nil
}

func (c *Contents) walkManifest(p *Plan, desc ocispec.Descriptor) error {
	m, err := c.manifest(desc)
	if err != nil {
		return err
	}
	if err := c.check(m.Config); err != nil {
		return fmt.Errorf("config of manifest %s: %w", desc.Digest, err)
	}
	if _, ok := c.Docs[m.Config.Digest]; !ok {
		return fmt.Errorf("config %s of manifest %s is not a JSON document: %w", m.Config.Digest, desc.Digest, errdefs.ErrInvalidArgument)
	}
	for _, l := range m.Layers {
		if err := c.check(l); err != nil {
			return fmt.Errorf("layer of manifest %s: %w", desc.Digest, err)
		}
		p.Blobs[l.Digest] = plain(l)
	}
	p.Blobs[m.Config.Digest] = plain(m.Config)
	p.Blobs[desc.Digest] = plain(desc)
	return nil
}

func (c *Contents) manifest(desc ocispec.Descriptor) (ocispec.Manifest, error) {
	var m ocispec.Manifest
	b, ok := c.Docs[desc.Digest]
	if !ok {
		return m, fmt.Errorf("manifest %s is not a JSON document: %w", desc.Digest, errdefs.ErrInvalidArgument)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("manifest %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if m.Config.Digest == "" {
		return m, fmt.Errorf("manifest %s has no config: %w", desc.Digest, errdefs.ErrInvalidArgument)
	}
	return m, nil
}

// check: the blob a descriptor names is in the archive with its size.
func (c *Contents) check(desc ocispec.Descriptor) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("descriptor digest %q: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	size, ok := c.Sizes[desc.Digest]
	if !ok {
		return fmt.Errorf("blob %s is missing from the archive: %w", desc.Digest, errdefs.ErrNotFound)
	}
	if size != desc.Size {
		return fmt.Errorf("blob %s is %d bytes in the archive, its descriptor says %d: %w", desc.Digest, size, desc.Size, errdefs.ErrInvalidArgument)
	}
	return nil
}

func plain(d ocispec.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, Platform: d.Platform}
}

func (c *Contents) dockerManifests() ([]DockerManifest, error) {
	var ms []DockerManifest
	if err := json.Unmarshal(c.DockerManifest, &ms); err != nil {
		return nil, fmt.Errorf("manifest.json is not a docker-archive manifest: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return ms, nil
}

func (c *Contents) dockerNamesByConfig() map[digest.Digest][]string {
	ms, err := c.dockerManifests()
	if err != nil {
		return nil
	}
	out := map[digest.Digest][]string{}
	for _, m := range ms {
		if d, err := c.file(m.Config); err == nil {
			out[d] = append(out[d], m.RepoTags...)
		}
	}
	return out
}

// resolveDocker makes a docker schema2 manifest for each manifest.json
// entry: the config file becomes the config, each layer file a layer with
// the media type its bytes show (docker save writes uncompressed tars).
func (c *Contents) resolveDocker(p *Plan) error {
	ms, err := c.dockerManifests()
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		return fmt.Errorf("manifest.json names no images: %w", errdefs.ErrInvalidArgument)
	}
	for _, e := range ms {
		cd, err := c.file(e.Config)
		if err != nil {
			return err
		}
		cb, ok := c.Docs[cd]
		if !ok {
			return fmt.Errorf("config %q is not a JSON document: %w", e.Config, errdefs.ErrInvalidArgument)
		}
		var cfg ocispec.Image
		if err := json.Unmarshal(cb, &cfg); err != nil {
			return fmt.Errorf("config %q: %v: %w", e.Config, err, errdefs.ErrInvalidArgument)
		}
		if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
			return fmt.Errorf("config %q lists %d diff IDs but manifest.json %d layers: %w", e.Config, len(cfg.RootFS.DiffIDs), len(e.Layers), errdefs.ErrInvalidArgument)
		}
		m := ocispec.Manifest{MediaType: oci.MediaTypeDockerManifest,
			Config: ocispec.Descriptor{MediaType: oci.MediaTypeDockerConfig, Digest: cd, Size: c.Sizes[cd]}}
		m.SchemaVersion = 2
		for i, lp := range e.Layers {
			ld, err := c.file(lp)
			if err != nil {
				return err
			}
			mt := oci.MediaTypeDockerLayer
			switch c.kinds[ld] {
			case kindGzip:
				mt = oci.MediaTypeDockerLayerGzip
			case kindZstd:
				mt = ocispec.MediaTypeImageLayerZstd
			default:
				if ld != cfg.RootFS.DiffIDs[i] {
					return fmt.Errorf("layer %q is %s but the config's diff ID %d is %s: %w", lp, ld, i, cfg.RootFS.DiffIDs[i], errdefs.ErrDigestMismatch)
				}
			}
			m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: mt, Digest: ld, Size: c.Sizes[ld]})
		}
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		md := ocispec.Descriptor{MediaType: oci.MediaTypeDockerManifest, Digest: digest.FromBytes(b), Size: int64(len(b))}
		p.Generated[md.Digest] = b
		p.Blobs[md.Digest] = md
		p.Blobs[cd] = m.Config
		for _, l := range m.Layers {
			p.Blobs[l.Digest] = l
		}
		p.Images = append(p.Images, Image{Names: e.RepoTags, Target: md, Manifests: []ocispec.Descriptor{md}})
	}
	return nil
}
