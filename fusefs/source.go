// Package fusefs serves a casfs store as one read-only FUSE filesystem:
//
//	blobs/<alg>/<hex>                       every blob the index knows (sha256 in practice)
//	images/<registry>/<repo...>/<tag>/      one directory per image name, holding
//	    manifest.json config.json           the image's blobs (the platform-selected manifest)
//	    index.json                          the image index (multi-platform images only)
//	    digest                              the name's target digest and "\n"
//	    layers/<n>                          relative symlinks into blobs/, n = 0 for the lowest layer
//	    rootfs                              relative symlink to rootfs/<id> (unpacked images)
//	images/<registry>/<repo...>@sha256:<hex>/  the same for a name pinned by digest
//	rootfs/<id>/                            the merged, read-only root filesystem of an image
//
// A tag and a sub-repository with the same name (lab/x:1 and lab/x/1:latest)
// share one directory, images/lab/x/1/, which holds both the tag's files and
// the sub-repository's tags. The two rarely collide because a tag directory
// only has the six fixed names above; when a sub-repository has a tag with one
// of those names (a tag "digest" or "layers"), the image's own file wins and
// the other image stays reachable through blobs/ and its digest. Giving
// repositories or tags a suffix would avoid that corner but break the path
// everybody types (images/docker.io/library/nginx/alpine/), so we keep the
// plain path.
//
// The filesystem reads everything through Source, which the store implements.
package fusefs

import (
	"context"
	"os"
	"time"

	"github.com/casfs/casfs/layers/merged"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Source is what the filesystem needs from the store. Implementations must
// be safe for concurrent use and must bound every call that may wait (a lazy
// fetch, a lazy unpack): the kernel and the reading process wait for it.
type Source interface {
	// Blobs lists every blob the index knows, with the size from its record.
	Blobs(ctx context.Context) ([]BlobInfo, error)
	// BlobInfo returns one blob's record; errdefs.ErrNotFound when unknown.
	BlobInfo(ctx context.Context, d digest.Digest) (BlobInfo, error)
	// OpenBlob returns the local blob file opened for reading, fetching it
	// first when the record exists but the file does not (lazy pull). The
	// filesystem maps errdefs.ErrNotFound to ENOENT and anything else to EIO.
	OpenBlob(ctx context.Context, d digest.Digest) (*os.File, error)
	// Images lists every image name with what it resolves to.
	Images(ctx context.Context) ([]ImageInfo, error)
	// Rootfs returns the merged tree of one image's root filesystem (see
	// ImageInfo.RootfsID), unpacking its layers first if needed;
	// errdefs.ErrNotFound when the id is unknown. The filesystem keeps the
	// tree while the kernel holds any of its nodes and calls again after
	// that, so implementations need not cache it.
	Rootfs(ctx context.Context, id string) (*merged.Tree, error)
}

// BlobInfo is one blob record.
type BlobInfo struct {
	Digest digest.Digest
	Size   int64
	// ModTime is the record's time (when the store first recorded the
	// blob), shown as the file's mtime; zero shows as the epoch.
	ModTime time.Time
}

// ImageInfo is one image name and what the filesystem shows for it.
type ImageInfo struct {
	// Name is the normalized reference: "docker.io/library/nginx:alpine" or
	// "docker.io/library/nginx@sha256:<hex>". A name with neither a tag nor
	// a digest shows as tag "latest".
	Name string
	// Target is the descriptor the name points at: an image index or a manifest.
	Target ocispec.Descriptor
	// Manifest is the platform-selected manifest (Target.Digest for a
	// single-platform image). When it differs from Target.Digest, the
	// target is an index and shows as index.json.
	Manifest digest.Digest
	// Config is the manifest's config blob.
	Config digest.Digest
	// Layers are the manifest's layer blobs, lowest first.
	Layers []digest.Digest
	// RootfsID names the image's directory under rootfs/ (for example its
	// top layer's chain ID); "" when the image has no root filesystem to show.
	RootfsID string
}
