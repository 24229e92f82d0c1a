package oci

import (
	"encoding/json"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker's media types, and the OCI ones the image-spec module marks
// deprecated but registries still serve.
const (
	MediaTypeDockerSchema1          = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSchema1Signed    = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	MediaTypeDockerManifest         = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig           = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer            = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeignLayerGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

	MediaTypeLayerNonDistributable     = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	MediaTypeLayerNonDistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	MediaTypeLayerNonDistributableZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
)

// IsIndex tells an OCI index or a Docker manifest list.
func IsIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

// IsManifest tells an OCI image manifest or a Docker schema 2 manifest.
func IsManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

// isSchema1 tells Docker's deprecated schema 1 manifests, which casfs
// refuses with a reason rather than as an unknown type.
func isSchema1(mt string) bool {
	return mt == MediaTypeDockerSchema1 || mt == MediaTypeDockerSchema1Signed
}

// IsConfig tells an image configuration (OCI or Docker).
func IsConfig(mt string) bool {
	return mt == ocispec.MediaTypeImageConfig || mt == MediaTypeDockerConfig
}

// Compression is how a layer's tar stream is compressed.
type Compression int

// The compressions layers come in.
const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

var layerTypes = map[string]Compression{
	ocispec.MediaTypeImageLayer:        Uncompressed,
	ocispec.MediaTypeImageLayerGzip:    Gzip,
	ocispec.MediaTypeImageLayerZstd:    Zstd,
	MediaTypeLayerNonDistributable:     Uncompressed,
	MediaTypeLayerNonDistributableGzip: Gzip,
	MediaTypeLayerNonDistributableZstd: Zstd,
	MediaTypeDockerLayer:               Uncompressed,
	MediaTypeDockerLayerGzip:           Gzip,
	MediaTypeDockerForeignLayerGzip:    Gzip,
}

// LayerCompression returns the compression of a layer media type; ok is
// false when mt is not a layer type casfs can unpack.
func LayerCompression(mt string) (c Compression, ok bool) {
	c, ok = layerTypes[mt]
	return c, ok
}

// IsLayer tells a layer media type casfs can unpack.
func IsLayer(mt string) bool {
	_, ok := layerTypes[mt]
	return ok
}

// ManifestAccept is what a client asks a registry for when it resolves a
// reference: schema 1 is included so that such an image is refused with a
// reason instead of a "not found".
func ManifestAccept() []string {
	return []string{
		ocispec.MediaTypeImageIndex,
		ocispec.MediaTypeImageManifest,
		MediaTypeDockerManifestList,
		MediaTypeDockerManifest,
		MediaTypeDockerSchema1Signed,
		MediaTypeDockerSchema1,
	}
}

// Sniff guesses the media type of a manifest or index document that no
// descriptor typed: its own mediaType field, else its shape. "" means it
// is not one.
func Sniff(data []byte) string {
	var probe struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Manifests     []json.RawMessage `json:"manifests"`
		Config        json.RawMessage   `json:"config"`
		FSLayers      json.RawMessage   `json:"fsLayers"`
	}
	if json.Unmarshal(data, &probe) != nil {
		return ""
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType
	case probe.SchemaVersion == 1 || probe.FSLayers != nil:
		return MediaTypeDockerSchema1
	case probe.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case probe.Config != nil:
		return ocispec.MediaTypeImageManifest
	}
	return ""
}
