package serve

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image is one image record: its full name (host/path:tag or
// host/path@digest, as the store records it), what it points at, and when
// it was last pulled or tagged.
type Image struct {
	Name    string
	Target  ocispec.Descriptor
	Updated time.Time
}

// Store is what the server needs of a casfs store.
type Store interface {
	// Images lists the image records (no documents read).
	Images(ctx context.Context) ([]Image, error)
	// Reach returns every digest the roots reach through indexes and
	// manifests, with the media type it is reached as ("" when unknown).
	Reach(ctx context.Context, roots []ocispec.Descriptor) (map[digest.Digest]string, error)
	// ReadManifest returns the verified bytes of a manifest or index,
	// fetching it first when it is recorded but not local.
	ReadManifest(ctx context.Context, d digest.Digest) ([]byte, error)
	// BlobSize returns a blob's recorded size, whether or not it is local,
	// without fetching it.
	BlobSize(ctx context.Context, d digest.Digest) (int64, error)
	// OpenBlob opens a blob's file, fetching it first when it is recorded
	// but not local. The file lets net/http send it with sendfile.
	OpenBlob(ctx context.Context, d digest.Digest) (*os.File, error)
	// StreamBlob reads a blob that is recorded but not local while it is
	// fetched and stored, with its size; a nil reader when it is local.
	// A read error means the bytes so far must not be trusted.
	StreamBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, int64, error)
}
