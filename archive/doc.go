// Package archive reads and writes image archives that other tools exchange:
// OCI image layouts as tar files (what `ctr image export`, `skopeo copy
// oci-archive:` and `docker save` since 25.0 write), with docker's
// manifest.json alongside, and the older docker-archive format of `docker
// save` and `skopeo copy docker-archive:` (manifest.json, per-layer tar files,
// repositories).
//
// The package knows formats only. Writing streams blob bytes the caller
// provides; reading hands every member to a Stager (the store's pending
// ingests) and keeps only the small metadata files and JSON documents in
// memory, then Resolve turns what was read into images.
package archive

import (
	"github.com/opencontainers/go-digest"
)

// Annotations on index.json entries that name images, as containerd writes them.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// Names of the metadata members.
const (
	layoutFile         = "oci-layout"
	indexFile          = "index.json"
	dockerManifestFile = "manifest.json"
	repositoriesFile   = "repositories"
	blobsDir           = "blobs/sha256/"
)

// maxDocument bounds one metadata file or JSON document kept in memory.
const maxDocument = 4 << 20

// maxDocsTotal bounds all documents of one archive kept in memory.
const maxDocsTotal = 256 << 20

// BlobPath is where an OCI layout keeps the blob d.
func BlobPath(d digest.Digest) string { return blobsDir + d.Encoded() }

// DockerManifest is one entry of docker's manifest.json.
type DockerManifest struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}
