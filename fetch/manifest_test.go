package fetch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// serveManifest runs a registry stand-in whose tag "1" is body with
// media type mt.
func serveManifest(t *testing.T, mt string, body []byte) string {
	d := digest.FromBytes(body)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/manifests/1") || strings.HasSuffix(r.URL.Path, "/manifests/"+d.String()) {
			w.Header().Set("Content-Type", mt)
			w.Header().Set("Docker-Content-Digest", d.String())
			w.Header().Set("Content-Length", itoa(int64(len(body))))
			if r.Method == http.MethodGet {
				w.Write(body)
			}
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://") + "/m/x:1"
}

func TestPullRefusesBadManifests(t *testing.T) {
	schema1 := []byte(`{"schemaVersion":1,"name":"m/x","tag":"1","fsLayers":[]}`)
	garbage := []byte(`{"schemaVersion":2,"config":`)
	for _, tc := range []struct {
		name, mt string
		body     []byte
		max      int64
		want     error
		text     string
	}{
		{"schema1 signed", oci.MediaTypeDockerSchema1Signed, schema1, 0, errdefs.ErrNotImplemented, "schema1 manifests are not supported"},
		{"schema1", oci.MediaTypeDockerSchema1, schema1, 0, errdefs.ErrNotImplemented, "repush the image"},
		{"unknown type", "application/vnd.example.thing+json", []byte(`{}`), 0, errdefs.ErrNotImplemented, "application/vnd.example.thing+json"},
		{"malformed json", ocispec.MediaTypeImageManifest, garbage, 0, errdefs.ErrInvalidArgument, digest.FromBytes(garbage).String()},
		{"malformed index", ocispec.MediaTypeImageIndex, garbage, 0, errdefs.ErrInvalidArgument, digest.FromBytes(garbage).String()},
		{"too large", ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"layers":[]}` + strings.Repeat(" ", 200)), 100, errdefs.ErrInvalidArgument, "over the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := serveManifest(t, tc.mt, tc.body)
			ts := newTestStore(t)
			_, err := ts.op(t, Options{PlainHTTP: true, MaxManifestSize: tc.max}).Pull(context.Background(), ref)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("want %v containing %q, got %v", tc.want, tc.text, err)
			}
		})
	}
}
