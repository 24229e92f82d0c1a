package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
)

// fakeStore keeps blobs as files and reaches what children says; remote
// blobs are recorded but not local: StreamBlob sends their bytes, and
// fails after them when broken says so.
type fakeStore struct {
	dir      string
	images   []Image
	children map[digest.Digest][]ocispec.Descriptor
	remote   map[digest.Digest][]byte
	broken   map[digest.Digest]bool
	gate     chan struct{} // when set, remote bodies wait for it to close
	streamed atomic.Int32  // remote blobs StreamBlob began to send
}

// gated holds a body back until its gate closes.
type gated struct {
	io.Reader
	gate chan struct{}
}

func (g gated) Read(b []byte) (int, error) {
	<-g.gate
	return g.Reader.Read(b)
}

func (f *fakeStore) StreamBlob(_ context.Context, d digest.Digest) (io.ReadCloser, int64, error) {
	b, ok := f.remote[d]
	if !ok {
		return nil, 0, nil
	}
	f.streamed.Add(1)
	var r io.Reader = strings.NewReader(string(b))
	if f.broken[d] {
		r = io.MultiReader(strings.NewReader(string(b[:len(b)/2])), iotest.ErrReader(errors.New("upstream went away")))
	}
	if f.gate != nil {
		r = gated{r, f.gate}
	}
	return io.NopCloser(r), int64(len(b)), nil
}

func (f *fakeStore) add(t *testing.T, mt string, b []byte, children ...ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(b)
	if err := os.WriteFile(filepath.Join(f.dir, d.Encoded()), b, 0o444); err != nil {
		t.Fatal(err)
	}
	f.children[d] = children
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
}

func (f *fakeStore) Images(context.Context) ([]Image, error) { return f.images, nil }

func (f *fakeStore) Reach(_ context.Context, roots []ocispec.Descriptor) (map[digest.Digest]string, error) {
	out := map[digest.Digest]string{}
	queue := append([]ocispec.Descriptor{}, roots...)
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if _, ok := out[d.Digest]; ok {
			continue
		}
		out[d.Digest] = d.MediaType
		queue = append(queue, f.children[d.Digest]...)
	}
	return out, nil
}

func (f *fakeStore) ReadManifest(_ context.Context, d digest.Digest) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(f.dir, d.Encoded()))
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("%s: %w", d, errdefs.ErrNotFound)
	}
	return b, err
}

func (f *fakeStore) BlobSize(_ context.Context, d digest.Digest) (int64, error) {
	if b, ok := f.remote[d]; ok {
		return int64(len(b)), nil
	}
	fi, err := os.Stat(filepath.Join(f.dir, d.Encoded()))
	if os.IsNotExist(err) {
		return 0, fmt.Errorf("%s: %w", d, errdefs.ErrNotFound)
	} else if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (f *fakeStore) OpenBlob(_ context.Context, d digest.Digest) (*os.File, error) {
	fh, err := os.Open(filepath.Join(f.dir, d.Encoded()))
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("%s: %w", d, errdefs.ErrNotFound)
	}
	return fh, err
}

// fixture: team/app:1 from two registries (the later one wins without
// ns), a two-platform index, a referrer, and a blob no image reaches.
type fixture struct {
	url                       string
	layer, config, man, man2  ocispec.Descriptor
	idx, oldMan, stray, refer ocispec.Descriptor
	layerBytes                []byte
	remote, broken            []byte
	store                     *fakeStore
}

func newFixture(t *testing.T, opts ...Options) *fixture {
	f := &fakeStore{dir: t.TempDir(), children: map[digest.Digest][]ocispec.Descriptor{}, remote: map[digest.Digest][]byte{}, broken: map[digest.Digest]bool{}}
	x := &fixture{layerBytes: []byte("0123456789 layer bytes")}
	x.layer = f.add(t, ocispec.MediaTypeImageLayerGzip, x.layerBytes)
	x.config = f.add(t, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	manifest := func(cfg, layer ocispec.Descriptor, extra string) ocispec.Descriptor {
		b := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]%s}`,
			ocispec.MediaTypeImageManifest, cfg.MediaType, cfg.Digest, cfg.Size, layer.MediaType, layer.Digest, layer.Size, extra)
		return f.add(t, ocispec.MediaTypeImageManifest, []byte(b), cfg, layer)
	}
	x.man = manifest(x.config, x.layer, "")
	x.man2 = manifest(f.add(t, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"arm64","os":"linux"}`)), x.layer, "")
	x.refer = manifest(f.add(t, "application/vnd.example.sbom", []byte(`{}`)), x.layer,
		fmt.Sprintf(`,"subject":{"mediaType":%q,"digest":%q,"size":%d}`, x.man.MediaType, x.man.Digest, x.man.Size))
	ib := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":%d},{"mediaType":%q,"digest":%q,"size":%d},{"mediaType":%q,"digest":%q,"size":%d}]}`,
		ocispec.MediaTypeImageIndex, x.man.MediaType, x.man.Digest, x.man.Size, x.man2.MediaType, x.man2.Digest, x.man2.Size, x.refer.MediaType, x.refer.Digest, x.refer.Size)
	x.idx = f.add(t, ocispec.MediaTypeImageIndex, []byte(ib), x.man, x.man2, x.refer)
	x.oldMan = manifest(f.add(t, ocispec.MediaTypeImageConfig, []byte(`{"os":"linux","old":1}`)), f.add(t, ocispec.MediaTypeImageLayer, []byte("old layer")), "")
	x.stray = f.add(t, ocispec.MediaTypeImageLayer, []byte("no image reaches this"))
	// Layers recorded but not local, reached by the pinned image's config.
	x.remote = []byte(strings.Repeat("pulled through ", 1000))
	x.broken = []byte(strings.Repeat("broken upstream ", 1000))
	for _, b := range [][]byte{x.remote, x.broken} {
		f.remote[digest.FromBytes(b)] = b
		f.children[x.man2.Digest] = append(f.children[x.man2.Digest], ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(b), Size: int64(len(b))})
	}
	f.broken[digest.FromBytes(x.broken)] = true
	now := time.Now()
	f.images = []Image{
		{Name: "old.example:5000/team/app:1", Target: x.oldMan, Updated: now.Add(-time.Hour)},
		{Name: "localhost:5000/team/app:1", Target: x.idx, Updated: now},
		{Name: "localhost:5000/team/app:2", Target: x.man, Updated: now},
		{Name: "localhost:5000/team/app:10", Target: x.man, Updated: now},
		{Name: "docker.io/library/nginx:alpine", Target: x.man, Updated: now},
		{Name: "localhost:5000/team/pinned@" + x.man2.Digest.String(), Target: x.man2, Updated: now},
	}
	o := Options{}
	if len(opts) > 0 {
		o = opts[0]
	}
	srv := httptest.NewServer(New(f, o))
	t.Cleanup(srv.Close)
	x.url, x.store = srv.URL, f
	return x
}

type reply struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, url string, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// wantCode checks a reply is the spec's error with status and code.
func wantCode(t *testing.T, r reply, status int, code string) {
	t.Helper()
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if r.status != status {
		t.Fatalf("status %d, want %d (%s)", r.status, status, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || len(body.Errors) != 1 || body.Errors[0].Code != code {
		t.Fatalf("body %q, want one error with code %s", r.body, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error content type %q", ct)
	}
}

func TestBase(t *testing.T) {
	x := newFixture(t)
	r := do(t, "GET", x.url+"/v2/")
	if r.status != 200 || r.header.Get("Docker-Distribution-API-Version") != "registry/2.0" || r.body != "{}" {
		t.Fatalf("GET /v2/: %d %v %q", r.status, r.header, r.body)
	}
}

func TestManifests(t *testing.T) {
	x := newFixture(t)
	bytesOf := func(d ocispec.Descriptor) string {
		r := do(t, "GET", x.url+"/v2/team/app/blobs/"+d.Digest.String())
		return r.body
	}
	for _, tc := range []struct {
		name, path string
		want       ocispec.Descriptor
	}{
		{"tag, newest registry wins", "/v2/team/app/manifests/1", x.idx},
		{"tag with ns", "/v2/team/app/manifests/1?ns=old.example:5000", x.oldMan},
		{"platform manifest by digest", "/v2/team/app/manifests/" + x.man2.Digest.String(), x.man2},
		{"docker hub name", "/v2/library/nginx/manifests/alpine?ns=docker.io", x.man},
		{"docker hub without ns", "/v2/library/nginx/manifests/alpine", x.man},
		{"pinned by digest only", "/v2/team/pinned/manifests/" + x.man2.Digest.String(), x.man2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "GET", x.url+tc.path)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if r.header.Get("Content-Type") != tc.want.MediaType || r.header.Get("Docker-Content-Digest") != tc.want.Digest.String() {
				t.Errorf("headers %v, want %s %s", r.header, tc.want.MediaType, tc.want.Digest)
			}
			if digest.FromString(r.body) != tc.want.Digest {
				t.Errorf("body is not the stored manifest")
			}
			h := do(t, "HEAD", x.url+tc.path)
			if h.status != 200 || h.body != "" || h.header.Get("Content-Length") != fmt.Sprint(tc.want.Size) || h.header.Get("Docker-Content-Digest") != tc.want.Digest.String() {
				t.Errorf("HEAD: %d %v %q", h.status, h.header, h.body)
			}
		})
	}
	if bytesOf(x.man) == "" {
		t.Error("a manifest is also readable as a blob")
	}
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/manifests/nope"), 404, "MANIFEST_UNKNOWN")
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/manifests/"+x.layer.Digest.String()), 404, "MANIFEST_UNKNOWN")
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/manifests/"+x.oldMan.Digest.String()), 404, "MANIFEST_UNKNOWN")
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/manifests/sha256:abc"), 400, "DIGEST_INVALID")
	wantCode(t, do(t, "GET", x.url+"/v2/team/nope/manifests/1"), 404, "NAME_UNKNOWN")
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/manifests/1?ns=other.example"), 404, "NAME_UNKNOWN")
	wantCode(t, do(t, "GET", x.url+"/v2/Team/App/manifests/1"), 400, "NAME_INVALID")
	if r := do(t, "HEAD", x.url+"/v2/team/app/manifests/nope"); r.status != 404 || r.body != "" {
		t.Errorf("HEAD of an unknown manifest: %d %q", r.status, r.body)
	}
}

func TestBlobs(t *testing.T) {
	x := newFixture(t)
	path := x.url + "/v2/team/app/blobs/" + x.layer.Digest.String()
	r := do(t, "GET", path)
	if r.status != 200 || r.body != string(x.layerBytes) || r.header.Get("Docker-Content-Digest") != x.layer.Digest.String() ||
		r.header.Get("Content-Length") != fmt.Sprint(len(x.layerBytes)) || r.header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("GET blob: %d %v %q", r.status, r.header, r.body)
	}
	h := do(t, "HEAD", path)
	if h.status != 200 || h.body != "" {
		t.Fatalf("HEAD blob: %d %v %q", h.status, h.header, h.body)
	}
	for _, k := range []string{"Content-Length", "Content-Type", "Docker-Content-Digest", "ETag", "Accept-Ranges"} {
		if h.header.Get(k) != r.header.Get(k) {
			t.Errorf("HEAD blob %s %q, GET's %q", k, h.header.Get(k), r.header.Get(k))
		}
	}
	if e := do(t, "HEAD", x.url+"/v2/team/app/blobs/"+x.stray.Digest.String()); e.status != 404 || e.header.Get("Docker-Content-Digest") != "" {
		t.Fatalf("HEAD of a blob no image reaches: %d %v", e.status, e.header)
	}
	p := do(t, "GET", path, "Range", "bytes=2-5")
	if p.status != 206 || p.body != "2345" || p.header.Get("Content-Range") != fmt.Sprintf("bytes 2-5/%d", len(x.layerBytes)) {
		t.Fatalf("range: %d %v %q", p.status, p.header, p.body)
	}
	tail := do(t, "GET", path, "Range", "bytes=-5")
	if tail.status != 206 || tail.body != "bytes" {
		t.Fatalf("suffix range: %d %q", tail.status, tail.body)
	}
	bad := do(t, "GET", path, "Range", "bytes=1000-2000")
	if bad.status != 416 || bad.header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(x.layerBytes)) {
		t.Fatalf("unsatisfiable range: %d %v", bad.status, bad.header)
	}
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/blobs/"+x.stray.Digest.String()), 404, "BLOB_UNKNOWN")
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/blobs/"+digest.FromString("unknown").String()), 404, "BLOB_UNKNOWN")
	// The old registry's layer belongs to the repository only with its ns.
	old := x.url + "/v2/team/app/blobs/" + digest.FromString("old layer").String()
	wantCode(t, do(t, "GET", old), 404, "BLOB_UNKNOWN")
	if r := do(t, "GET", old+"?ns=old.example:5000"); r.status != 200 || r.body != "old layer" {
		t.Fatalf("blob with ns: %d %q", r.status, r.body)
	}
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/blobs/sha256:zz"), 400, "DIGEST_INVALID")
	wantCode(t, do(t, "GET", x.url+"/v2/team/none/blobs/"+x.layer.Digest.String()), 404, "NAME_UNKNOWN")
}

func TestTagsAndCatalog(t *testing.T) {
	x := newFixture(t)
	type tags struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	get := func(path string, v any) reply {
		r := do(t, "GET", x.url+path)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		if err := json.Unmarshal([]byte(r.body), v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return r
	}
	var all tags
	if get("/v2/team/app/tags/list", &all); !reflect.DeepEqual(all, tags{"team/app", []string{"1", "10", "2"}}) {
		t.Fatalf("tags: %+v", all)
	}
	var p1 tags
	r := get("/v2/team/app/tags/list?n=2", &p1)
	if !reflect.DeepEqual(p1.Tags, []string{"1", "10"}) || r.header.Get("Link") != `</v2/team/app/tags/list?last=10&n=2>; rel="next"` {
		t.Fatalf("page 1: %+v, Link %q", p1, r.header.Get("Link"))
	}
	var p2 tags
	r = get("/v2/team/app/tags/list?n=2&last=10", &p2)
	if !reflect.DeepEqual(p2.Tags, []string{"2"}) || r.header.Get("Link") != "" {
		t.Fatalf("page 2: %+v, Link %q", p2, r.header.Get("Link"))
	}
	var p0 tags
	if get("/v2/team/app/tags/list?n=0", &p0); len(p0.Tags) != 0 || p0.Tags == nil {
		t.Fatalf("n=0: %+v", p0)
	}
	var old tags
	if get("/v2/team/app/tags/list?ns=old.example:5000", &old); !reflect.DeepEqual(old.Tags, []string{"1"}) {
		t.Fatalf("tags with ns: %+v", old)
	}
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/tags/list?n=-1"), 400, "PAGINATION_NUMBER_INVALID")
	wantCode(t, do(t, "GET", x.url+"/v2/team/none/tags/list"), 404, "NAME_UNKNOWN")

	var cat struct{ Repositories []string }
	if get("/v2/_catalog", &cat); !reflect.DeepEqual(cat.Repositories, []string{"library/nginx", "team/app", "team/pinned"}) {
		t.Fatalf("catalog: %v", cat.Repositories)
	}
	if get("/v2/_catalog?ns=old.example:5000", &cat); !reflect.DeepEqual(cat.Repositories, []string{"team/app"}) {
		t.Fatalf("catalog with ns: %v", cat.Repositories)
	}
	if get("/v2/_catalog?n=1&last=library/nginx", &cat); !reflect.DeepEqual(cat.Repositories, []string{"team/app"}) {
		t.Fatalf("catalog page: %v", cat.Repositories)
	}
}

func TestReferrers(t *testing.T) {
	x := newFixture(t)
	var idx ocispec.Index
	r := do(t, "GET", x.url+"/v2/team/app/referrers/"+x.man.Digest.String())
	if r.status != 200 || r.header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
		t.Fatalf("referrers: %d %v", r.status, r.header)
	}
	if err := json.Unmarshal([]byte(r.body), &idx); err != nil || len(idx.Manifests) != 1 ||
		idx.Manifests[0].Digest != x.refer.Digest || idx.Manifests[0].ArtifactType != "application/vnd.example.sbom" {
		t.Fatalf("referrers body: %s", r.body)
	}
	r = do(t, "GET", x.url+"/v2/team/app/referrers/"+x.man.Digest.String()+"?artifactType=application/other")
	if json.Unmarshal([]byte(r.body), &idx); len(idx.Manifests) != 0 || r.header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers: %s %v", r.body, r.header)
	}
	r = do(t, "GET", x.url+"/v2/team/app/referrers/"+x.layer.Digest.String())
	if r.status != 200 || !strings.Contains(r.body, `"manifests":[]`) || !strings.Contains(r.body, `"schemaVersion":2`) {
		t.Fatalf("no referrers: %d %s", r.status, r.body)
	}
}

func TestReadOnly(t *testing.T) {
	x := newFixture(t)
	for _, tc := range []struct{ method, path string }{
		{"POST", "/v2/team/app/blobs/uploads/"},
		{"PATCH", "/v2/team/app/blobs/uploads/abc"},
		{"PUT", "/v2/team/app/manifests/1"},
		{"DELETE", "/v2/team/app/manifests/1"},
		{"DELETE", "/v2/team/app/blobs/" + x.layer.Digest.String()},
		{"GET", "/v2/team/app/blobs/uploads/abc"},
	} {
		r := do(t, tc.method, x.url+tc.path)
		wantCode(t, r, 405, "UNSUPPORTED")
	}
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/whatever/x"), 404, "NOT_FOUND")
	wantCode(t, do(t, "GET", x.url+"/other"), 404, "NOT_FOUND")
}

func TestListenConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		c    ListenConfig
		want string
	}{
		{ListenConfig{Addr: "127.0.0.1:5050"}, ""},
		{ListenConfig{Addr: "localhost:0"}, ""},
		{ListenConfig{Addr: "[::1]:5050"}, ""},
		{ListenConfig{Addr: "0.0.0.0:5050"}, "needs --tls-cert"},
		{ListenConfig{Addr: ":5050"}, "needs --tls-cert"},
		{ListenConfig{Addr: ":5050", Insecure: true}, ""},
		{ListenConfig{Addr: ":5050", TLSCert: "c", TLSKey: "k"}, ""},
		{ListenConfig{Addr: ":5050", TLSCert: "c"}, "go together"},
		{ListenConfig{Addr: "127.0.0.1:5050", ClientCA: "ca"}, "needs --tls-cert"},
		{ListenConfig{Addr: "5050"}, "want HOST:PORT"},
	} {
		err := tc.c.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}
}

func TestPullThrough(t *testing.T) {
	x := newFixture(t)
	base := x.url + "/v2/team/pinned/blobs/"
	// HEAD answers from the record and fetches nothing.
	h := do(t, "HEAD", base+digest.FromBytes(x.remote).String())
	if h.status != 200 || h.body != "" || h.header.Get("Content-Length") != fmt.Sprint(len(x.remote)) ||
		h.header.Get("Docker-Content-Digest") != digest.FromBytes(x.remote).String() || h.header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("HEAD of a blob that is not local: %d %v", h.status, h.header)
	}
	if n := x.store.streamed.Load(); n != 0 {
		t.Fatalf("HEAD fetched %d blobs from upstream", n)
	}
	r := do(t, "GET", base+digest.FromBytes(x.remote).String())
	if r.status != 200 || r.body != string(x.remote) || r.header.Get("Content-Length") != fmt.Sprint(len(x.remote)) ||
		r.header.Get("Docker-Content-Digest") != digest.FromBytes(x.remote).String() {
		t.Fatalf("pull-through: %d %v, %d bytes", r.status, r.header, len(r.body))
	}
	if n := x.store.streamed.Load(); n != 1 {
		t.Fatalf("GET streamed %d blobs from upstream, want 1", n)
	}
	resp, err := http.Get(base + digest.FromBytes(x.broken).String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err == nil || len(got) == len(x.broken) {
		t.Fatalf("a broken pull-through read as complete: %d bytes, %v", len(got), err)
	}
	// Not reached from this repository: refused before anything is fetched.
	wantCode(t, do(t, "GET", x.url+"/v2/team/app/blobs/"+digest.FromBytes(x.remote).String()+"?ns=old.example:5000"), 404, "BLOB_UNKNOWN")
}

// TestTransferLimit: with one transfer slot, a second blob request waits
// until the first body is sent.
func TestTransferLimit(t *testing.T) {
	x := newFixture(t, Options{MaxTransfers: 1})
	x.store.gate = make(chan struct{})
	first, err := http.Get(x.url + "/v2/team/pinned/blobs/" + digest.FromBytes(x.remote).String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	// The first response's headers are out; its body waits at the gate,
	// holding the only slot.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", x.url+"/v2/team/app/blobs/"+x.layer.Digest.String(), nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a second transfer started while the only slot was taken: %s", resp.Status)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second request: %v", err)
	}
	close(x.store.gate)
	if b, err := io.ReadAll(first.Body); err != nil || string(b) != string(x.remote) {
		t.Fatalf("first body: %d bytes, %v", len(b), err)
	}
	if r := do(t, "GET", x.url+"/v2/team/app/blobs/"+x.layer.Digest.String()); r.status != 200 || r.body != string(x.layerBytes) {
		t.Fatalf("after the slot freed: %d %q", r.status, r.body)
	}
}

// TestBlobBodiesCopiedAndSent: a blob larger than the copy buffer arrives
// whole and in ranges that straddle buffer boundaries both ways a body
// leaves: copied in large writes (to a local peer, as here) and with
// sendfile (to a remote peer; forced here, since tests reach only
// loopback).
func TestBlobBodiesCopiedAndSent(t *testing.T) {
	for _, sendfile := range []bool{false, true} {
		t.Run(fmt.Sprintf("sendfile=%v", sendfile), func(t *testing.T) {
			x := newFixture(t)
			big := make([]byte, 3<<20+12345)
			for i := range big {
				big[i] = byte(i*7 + i>>13)
			}
			d := x.store.add(t, ocispec.MediaTypeImageLayer, big)
			x.store.children[x.man.Digest] = append(x.store.children[x.man.Digest], d)
			s := New(x.store, Options{})
			s.sendfileLocal = sendfile
			srv := httptest.NewServer(s)
			t.Cleanup(srv.Close)
			path := srv.URL + "/v2/team/app/blobs/" + d.Digest.String()
			if r := do(t, "GET", path); r.status != 200 || digest.FromString(r.body) != d.Digest {
				t.Fatalf("GET: %d, %d bytes hashing to %s, want %d bytes of %s", r.status, len(r.body), digest.FromString(r.body), len(big), d.Digest)
			}
			from, to := 1<<20-3, 2<<20+5
			r := do(t, "GET", path, "Range", fmt.Sprintf("bytes=%d-%d", from, to))
			if r.status != 206 || r.body != string(big[from:to+1]) {
				t.Fatalf("range across buffer boundaries: %d, %d bytes, want 206 and %d bytes", r.status, len(r.body), to+1-from)
			}
		})
	}
}

func TestLoopbackPeer(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:5050": true, "127.3.4.5:1": true, "[::1]:5050": true, "[::ffff:127.0.0.1]:80": true,
		"192.0.2.7:5050": false, "[2001:db8::1]:5050": false, "": false, "@": false,
	} {
		if got := loopbackPeer(&http.Request{RemoteAddr: addr}); got != want {
			t.Errorf("loopbackPeer(%q) = %v, want %v", addr, got, want)
		}
	}
}
