package store

import (
	"context"
	"io"
)

// ExportOptions control image export.
type ExportOptions struct {
	// RegistryOptions reach the registries of lazily pulled blobs that must
	// be fetched before they can be exported (embedded mode; a mount daemon
	// uses its own lazy fetcher).
	RegistryOptions
	Platform     string `json:"platform,omitempty"` // os/arch[/variant]; default this machine's
	AllPlatforms bool   `json:"allPlatforms,omitempty"`
	// SkipDockerManifest leaves out docker's manifest.json.
	SkipDockerManifest bool `json:"skipDockerManifest,omitempty"`
	// LocalOnly refuses images whose blobs are not all local instead of
	// fetching what is missing.
	LocalOnly bool `json:"localOnly,omitempty"`
}

// ImportOptions control image import.
type ImportOptions struct {
	// BaseName names images whose archive entry has only a tag
	// (org.opencontainers.image.ref.name): BaseName:tag.
	BaseName string `json:"baseName,omitempty"`
	// Digests also records <repository>@<digest> names.
	Digests  bool `json:"digests,omitempty"`
	NoUnpack bool `json:"noUnpack,omitempty"`
}

// Archives is image export and import (ctr image export/import).
type Archives interface {
	// ExportImages writes the images refs to w as an OCI image layout tar
	// with docker's manifest.json, which ctr, skopeo and docker load read.
	ExportImages(ctx context.Context, w io.Writer, refs []string, opts ExportOptions) error
	// ImportImages reads an OCI layout or docker-archive tar; nothing
	// becomes visible unless every blob verifies and every image is complete.
	ImportImages(ctx context.Context, r io.Reader, opts ImportOptions) ([]ImageInfo, error)
}
