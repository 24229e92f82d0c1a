package testimage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/oci"
)

// Layer is one layer of an image. Its files are sorted by path unless
// KeepOrder is set.
type Layer struct {
	Files []File
	// Compression is "gzip" (the default when empty), "zstd", "none",
	// "estargz" (gzip per file with a TOC, built by the upstream estargz
	// builder; the descriptor carries the TOC digest annotation) or
	// "zstdchunked" (the same with zstd frames and the zstd:chunked
	// footer and annotations).
	Compression string
	// ChunkSize is the estargz chunk size (0: the builder's default).
	ChunkSize int
	// PrioritizedFiles are put first in an estargz layer, before its
	// prefetch landmark.
	PrioritizedFiles []string
	// DockerMediaType uses the Docker layer media types. Docker has none for
	// zstd, so zstd layers always get the OCI one.
	DockerMediaType bool
	// MediaType, when set, replaces the computed media type verbatim (for
	// tests of unknown or foreign types).
	MediaType string
	// KeepOrder writes Files in the given order instead of sorted by path.
	KeepOrder bool
}

// ImageSpec describes an image to build.
type ImageSpec struct {
	Layers []Layer
	// Platform defaults to linux/amd64 when OS and Architecture are empty.
	Platform ocispec.Platform
	// Docker uses Docker schema2 manifest, config and layer media types.
	Docker      bool
	Config      ocispec.ImageConfig
	Annotations map[string]string
}

// Image is a built image: descriptors and every blob by digest (manifest,
// config and layers).
type Image struct {
	Manifest ocispec.Descriptor // carries the platform, for BuildIndex
	Config   ocispec.Descriptor
	Layers   []ocispec.Descriptor
	DiffIDs  []digest.Digest
	Blobs    map[digest.Digest][]byte
}

// Build compresses the layers and writes config and manifest.
func Build(spec ImageSpec) (*Image, error) {
	img := &Image{Blobs: map[digest.Digest][]byte{}}
	plat := spec.Platform
	if plat.OS == "" && plat.Architecture == "" {
		plat.OS, plat.Architecture = "linux", "amd64"
	}
	created := defaultModTime
	cfg := ocispec.Image{
		Created:  &created,
		Platform: plat,
		Config:   spec.Config,
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	for i, l := range spec.Layers {
		desc, diffID, blob, err := buildLayer(l, spec.Docker)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		img.Layers = append(img.Layers, desc)
		img.DiffIDs = append(img.DiffIDs, diffID)
		img.Blobs[desc.Digest] = blob
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
		cfg.History = append(cfg.History, ocispec.History{
			Created:   &created,
			CreatedBy: fmt.Sprintf("testimage layer %d", i),
		})
	}

	configType, manifestType := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageManifest
	if spec.Docker {
		configType, manifestType = oci.MediaTypeDockerConfig, oci.MediaTypeDockerManifest
	}
	cfgBytes, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	img.Config = img.add(configType, cfgBytes)

	m := ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   manifestType,
		Config:      img.Config,
		Layers:      img.Layers,
		Annotations: spec.Annotations,
	}
	if m.Layers == nil {
		m.Layers = []ocispec.Descriptor{} // registries reject "layers": null
	}
	mBytes, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	img.Manifest = img.add(manifestType, mBytes)
	img.Manifest.Platform = &plat
	return img, nil
}

func (img *Image) add(mediaType string, b []byte) ocispec.Descriptor {
	d := digest.FromBytes(b)
	img.Blobs[d] = b
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

// ManifestBytes returns the image's manifest JSON.
func (img *Image) ManifestBytes() []byte { return img.Blobs[img.Manifest.Digest] }

// ConfigBytes returns the image's config JSON.
func (img *Image) ConfigBytes() []byte { return img.Blobs[img.Config.Digest] }

func buildLayer(l Layer, docker bool) (ocispec.Descriptor, digest.Digest, []byte, error) {
	files := l.Files
	if !l.KeepOrder {
		files = sortedFiles(files)
	}
	raw, err := tarFiles(files)
	if err != nil {
		return ocispec.Descriptor{}, "", nil, err
	}
	docker = docker || l.DockerMediaType
	var mt string
	switch l.Compression {
	case "", "gzip", "estargz":
		mt = ocispec.MediaTypeImageLayerGzip
		if docker {
			mt = oci.MediaTypeDockerLayerGzip
		}
	case "zstd", "zstdchunked":
		mt = ocispec.MediaTypeImageLayerZstd
	case "none":
		mt = ocispec.MediaTypeImageLayer
		if docker {
			mt = oci.MediaTypeDockerLayer
		}
	default:
		return ocispec.Descriptor{}, "", nil, fmt.Errorf("unknown compression %q (want gzip, zstd, none, estargz or zstdchunked)", l.Compression)
	}
	blob, diffID, annotations, err := compressLayer(l, raw)
	if err != nil {
		return ocispec.Descriptor{}, "", nil, err
	}
	if l.MediaType != "" {
		mt = l.MediaType
	}
	return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(blob), Size: int64(len(blob)), Annotations: annotations}, diffID, blob, nil
}

// Gzip compresses b with a header that holds no name and no time, so the
// output depends only on b. It compresses at the fastest level: under the
// race detector a deflate costs several times its usual CPU, and no test
// weighs the compressed bytes.
func Gzip(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}

// zstdBytes compresses b in one frame with a single encoder goroutine, so the
// output depends only on b.
func zstdBytes(b []byte) ([]byte, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil), nil
}

// Index is a built image index (or Docker manifest list) with the blobs of
// all its images.
type Index struct {
	Desc   ocispec.Descriptor
	Images []*Image
	Blobs  map[digest.Digest][]byte
}

// BuildIndex makes an index of images, each listed with its platform. With
// docker it is a Docker manifest list.
func BuildIndex(images []*Image, docker bool) (*Index, error) {
	mt := ocispec.MediaTypeImageIndex
	if docker {
		mt = oci.MediaTypeDockerManifestList
	}
	ix := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: mt,
		Manifests: []ocispec.Descriptor{},
	}
	out := &Index{Images: images, Blobs: map[digest.Digest][]byte{}}
	for i, img := range images {
		if img == nil {
			return nil, fmt.Errorf("build index: image %d is nil", i)
		}
		ix.Manifests = append(ix.Manifests, img.Manifest)
		for d, b := range img.Blobs {
			out.Blobs[d] = b
		}
	}
	b, err := json.Marshal(ix)
	if err != nil {
		return nil, fmt.Errorf("encode index: %w", err)
	}
	d := digest.FromBytes(b)
	out.Blobs[d] = b
	out.Desc = ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	return out, nil
}

// buildEStargz converts a tar stream to an eStargz blob, returning the
// builder's diff ID (the uncompressed stream includes the TOC as a tar
// member) and the layer annotation that pins the TOC.
func buildEStargz(l Layer, raw []byte) ([]byte, digest.Digest, map[string]string, error) {
	// estargz compresses at gzip's best by default: seconds of CPU per
	// layer under the race detector, for bytes no test weighs.
	opts := []estargz.Option{estargz.WithChunkSize(l.ChunkSize), estargz.WithCompressionLevel(gzip.BestSpeed)}
	if len(l.PrioritizedFiles) > 0 {
		opts = append(opts, estargz.WithPrioritizedFiles(l.PrioritizedFiles))
	}
	annotations := map[string]string{}
	if l.Compression == "zstdchunked" {
		opts = append(opts, estargz.WithCompression(struct {
			*zstdchunked.Compressor
			*zstdchunked.Decompressor
		}{&zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault, Metadata: annotations}, new(zstdchunked.Decompressor)}))
	}
	b, err := estargz.Build(io.NewSectionReader(bytes.NewReader(raw), 0, int64(len(raw))), opts...)
	if err != nil {
		return nil, "", nil, fmt.Errorf("estargz: %w", err)
	}
	defer b.Close()
	blob, err := io.ReadAll(b)
	if err != nil {
		return nil, "", nil, fmt.Errorf("estargz: %w", err)
	}
	annotations[estargz.TOCJSONDigestAnnotation] = b.TOCDigest().String()
	return blob, b.DiffID(), annotations, nil
}

// NestIndex makes an OCI index whose one entry is inner, as some registries
// serve attestation or multi-variant images: the manifests sit one index
// further down.
func NestIndex(inner *Index) (*Index, error) {
	ix := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{inner.Desc},
	}
	b, err := json.Marshal(ix)
	if err != nil {
		return nil, fmt.Errorf("encode index: %w", err)
	}
	out := &Index{Images: inner.Images, Blobs: map[digest.Digest][]byte{}}
	for d, v := range inner.Blobs {
		out.Blobs[d] = v
	}
	d := digest.FromBytes(b)
	out.Blobs[d] = b
	out.Desc = ocispec.Descriptor{MediaType: ix.MediaType, Digest: d, Size: int64(len(b))}
	return out, nil
}
