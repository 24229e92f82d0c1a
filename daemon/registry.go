package daemon

import (
	"context"
	"net"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/serve"
	"github.com/casfs/casfs/store"
)

// registrySource shows a store through the registry server's Store interface.
type registrySource struct{ *store.Local }

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
