package daemon

import (
	"context"
	"io"
	"net"
	"os"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/serve"
	"github.com/casfs/casfs/store"
)

// registryStore is what the registry server reads of the store: serve.Store
// but for Images and BlobSize, which registrySource answers from the records.
type registryStore interface {
	ImageRecords(ctx context.Context) ([]store.ImageInfo, error)
	ContentInfo(ctx context.Context, d digest.Digest) (store.ContentInfo, error)
	Reach(ctx context.Context, roots []ocispec.Descriptor) (map[digest.Digest]string, error)
	ReadManifest(ctx context.Context, d digest.Digest) ([]byte, error)
	OpenBlob(ctx context.Context, d digest.Digest) (*os.File, error)
	StreamBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, int64, error)
}

// registrySource shows a store through the registry server's Store interface.
type registrySource struct{ registryStore }

var _ serve.Store = registrySource{}

func (r registrySource) Images(ctx context.Context) ([]serve.Image, error) {
	recs, err := r.ImageRecords(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]serve.Image, len(recs))
	for i, rec := range recs {
		out[i] = serve.Image{Name: rec.Name, Target: rec.Target, Updated: rec.UpdatedAt}
	}
	return out, nil
}

func (r registrySource) BlobSize(ctx context.Context, d digest.Digest) (int64, error) {
	info, err := r.ContentInfo(ctx, d)
	return info.Size, err
}

// registryURL is the base URL of the listening registry.
func registryURL(c serve.ListenConfig, addr net.Addr) string {
	scheme := "http"
	if c.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + addr.String()
}
