package fetch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
	"github.com/casfs/casfs/oci"
)

var linuxAMD64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}

func TestPullThreeLayers(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "three", 3, linuxAMD64, false)
	pushImage(t, reg, "lib/app", "v1", img)

	ts := newTestStore(t)
	rec := newRecorder()
	f := ts.op(t, Options{PlainHTTP: true, Progress: rec})
	ctx := context.Background()
	got, err := f.Pull(ctx, reg.Ref("lib/app", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != reg.Host+"/lib/app:v1" || got.Target.Digest != img.Manifest.Digest || got.Target.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("image record %+v", got)
	}
	want := []Source{{Host: reg.Host, Repo: "lib/app"}}
	for d, b := range img.Blobs {
		ts.requireBlob(t, b)
		br, err := ts.rec.Lookup(ctx, d)
		if err != nil {
			t.Fatalf("blob record %s: %v", d, err)
		}
		if !slices.Equal(br.Sources, want) || br.Desc.MediaType == "" || br.Desc.Size != int64(len(b)) {
			t.Errorf("blob record %s: %+v", d, br)
		}
		if rec.existed[d] {
			t.Errorf("blob %s reported as existing on the first pull", d)
		}
	}
	for _, l := range img.Layers {
		if got := rec.last[l.Digest]; got != l.Size {
			t.Errorf("layer %s: progress ended at %d of %d bytes", l.Digest, got, l.Size)
		}
	}

	// A second pull moves nothing.
	rec2 := newRecorder()
	f2 := ts.op(t, Options{PlainHTTP: true, Progress: rec2})
	if _, err := f2.Pull(ctx, reg.Ref("lib/app", "v1")); err != nil {
		t.Fatal(err)
	}
	for d := range img.Blobs {
		if !rec2.existed[d] {
			t.Errorf("blob %s fetched again on the second pull", d)
		}
	}
}

func TestPullMultiPlatform(t *testing.T) {
	for _, docker := range []bool{false, true} {
		t.Run(map[bool]string{false: "oci", true: "docker"}[docker], func(t *testing.T) {
			reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
			here := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
			other := ocispec.Platform{OS: "linux", Architecture: "s390x"}
			if runtime.GOARCH == "s390x" {
				other.Architecture = "ppc64le"
			}
			a := buildImage(t, "other", 2, other, docker)
			b := buildImage(t, "here", 2, here, docker)
			c := buildImage(t, "win", 1, ocispec.Platform{OS: "windows", Architecture: runtime.GOARCH}, docker)
			idx, err := testimage.BuildIndex([]*testimage.Image{a, b, c}, docker)
			if err != nil {
				t.Fatal(err)
			}
			pushBlobs(t, reg, "multi", "1", idx.Blobs, idx.Desc, a.Manifest, b.Manifest, c.Manifest)

			ts := newTestStore(t)
			res, err := ts.op(t, Options{PlainHTTP: true}).PullContent(context.Background(), reg.Ref("multi", "1"))
			if err != nil {
				t.Fatal(err)
			}
			if res.Target.Digest != idx.Desc.Digest || len(res.ManifestDescs) != 1 || res.ManifestDescs[0].Digest != b.Manifest.Digest {
				t.Fatalf("default platform should pick %s: %+v", oci.FormatPlatform(&here), res.ManifestDescs)
			}
			for d, blob := range b.Blobs {
				ts.requireBlob(t, blob)
				_ = d
			}
			for _, l := range a.Layers {
				if ts.has(t, l.Digest) {
					t.Fatalf("layer %s of the other platform was fetched", l.Digest)
				}
			}

			all, err := ts.op(t, Options{PlainHTTP: true, AllPlatforms: true}).PullContent(context.Background(), reg.Ref("multi", "1"))
			if err != nil {
				t.Fatal(err)
			}
			if len(all.Manifests) != 3 {
				t.Fatalf("all platforms: %d manifests", len(all.Manifests))
			}
			for _, blob := range idx.Blobs {
				ts.requireBlob(t, blob)
			}

			_, err = ts.op(t, Options{PlainHTTP: true, Platform: "linux/mips64"}).PullContent(context.Background(), reg.Ref("multi", "1"))
			if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "linux/mips64") ||
				!strings.Contains(err.Error(), "(it has linux/s390x, linux/"+runtime.GOARCH+", windows/"+runtime.GOARCH+")") {
				t.Fatalf("missing platform: %v", err)
			}
		})
	}
}

func TestPullDockerSchema2(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "docker", 2, linuxAMD64, true)
	pushImage(t, reg, "d/img", "latest", img)
	ts := newTestStore(t)
	got, err := ts.op(t, Options{PlainHTTP: true}).Pull(context.Background(), reg.Host+"/d/img")
	if err != nil {
		t.Fatal(err)
	}
	if got.Target.MediaType != oci.MediaTypeDockerManifest || got.Name != reg.Host+"/d/img:latest" {
		t.Fatalf("%+v", got)
	}
	for _, b := range img.Blobs {
		ts.requireBlob(t, b)
	}
}

func TestPullUnknownTagAndStoppedRegistry(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	pushImage(t, reg, "x", "1", buildImage(t, "x", 1, linuxAMD64, false))
	ts := newTestStore(t)
	f := ts.op(t, Options{PlainHTTP: true, Timeout: 2 * time.Second})
	ctx := context.Background()
	for _, ref := range []string{reg.Ref("x", "nope"), reg.Ref("nope", "1")} {
		_, err := f.Pull(ctx, ref)
		if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "manifest unknown") {
			t.Fatalf("%s: want ErrNotFound manifest unknown, got %v", ref, err)
		}
	}
	if _, err := f.Pull(ctx, "Bad Ref"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bad reference: %v", err)
	}
	reg.Stop()
	_, err := f.Pull(ctx, reg.Ref("x", "1"))
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("stopped registry: want ErrUnavailable, got %v", err)
	}
}

func TestPullTLSAndAuth(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{TLS: true, Auth: true})
	img := buildImage(t, "tls", 1, linuxAMD64, false)
	pushImage(t, reg, "sec/app", "1", img)
	ctx := context.Background()
	ref := reg.Ref("sec/app", "1")

	hosts := t.TempDir()
	writeHostsToml(t, hosts, reg.Host, "server = \""+reg.URL+"\"\nca = \""+reg.CACertPath+"\"\n")

	t.Run("ca and explicit credentials", func(t *testing.T) {
		ts := newTestStore(t)
		if _, err := ts.op(t, Options{HostsDir: hosts, Username: reg.Username, Password: reg.Password}).Pull(ctx, ref); err != nil {
			t.Fatal(err)
		}
		for _, b := range img.Blobs {
			ts.requireBlob(t, b)
		}
	})
	t.Run("no ca", func(t *testing.T) {
		ts := newTestStore(t)
		_, err := ts.op(t, Options{Username: reg.Username, Password: reg.Password}).Pull(ctx, ref)
		if err == nil || !strings.Contains(err.Error(), "unknown authority") {
			t.Fatalf("want unknown authority, got %v", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		ts := newTestStore(t)
		_, err := ts.op(t, Options{HostsDir: hosts, Username: reg.Username, Password: "wrong"}).Pull(ctx, ref)
		if !errors.Is(err, errdefs.ErrUnauthorized) {
			t.Fatalf("want ErrUnauthorized, got %v", err)
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Fatalf("error shows the password: %v", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", t.TempDir())
		ts := newTestStore(t)
		_, err := ts.op(t, Options{HostsDir: hosts}).Pull(ctx, ref)
		if !errors.Is(err, errdefs.ErrUnauthorized) {
			t.Fatalf("want ErrUnauthorized, got %v", err)
		}
	})
	t.Run("docker config.json", func(t *testing.T) {
		writeDockerConfig(t, reg.Host, reg.Username, reg.Password)
		ts := newTestStore(t)
		if _, err := ts.op(t, Options{HostsDir: hosts}).Pull(ctx, ref); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPullClientCert(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{ClientCA: true})
	img := buildImage(t, "mtls", 1, linuxAMD64, false)
	pushImage(t, reg, "m/app", "1", img)
	ctx := context.Background()
	ref := reg.Ref("m/app", "1")

	withClient := t.TempDir()
	writeHostsToml(t, withClient, reg.Host, "ca = \""+reg.CACertPath+"\"\nclient = [[\""+reg.ClientCertPath+"\", \""+reg.ClientKeyPath+"\"]]\n")
	ts := newTestStore(t)
	if _, err := ts.op(t, Options{HostsDir: withClient}).Pull(ctx, ref); err != nil {
		t.Fatal(err)
	}

	// Docker's certs.d files (ca.crt, client.cert, client.key) work too.
	ts = newTestStore(t)
	if _, err := ts.op(t, Options{HostsDir: reg.CertsDir}).Pull(ctx, ref); err != nil {
		t.Fatalf("legacy certs.d: %v", err)
	}

	without := t.TempDir()
	writeHostsToml(t, without, reg.Host, "ca = \""+reg.CACertPath+"\"\n")
	ts = newTestStore(t)
	_, err := ts.op(t, Options{HostsDir: without, Timeout: 5 * time.Second}).Pull(ctx, ref)
	if !errors.Is(err, errdefs.ErrUnauthorized) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without a client certificate: want a certificate error, got %v", err)
	}
}

func TestPullMirror(t *testing.T) {
	upstream := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "mirror", 2, linuxAMD64, false)
	pushImage(t, upstream, "lib/m", "1", img)
	mirror := testenv.StartRegistry(t, testenv.RegistryOptions{ProxyRemoteURL: upstream.URL})
	front := newCountingFront(t, mirror)

	hosts := t.TempDir()
	writeHostsToml(t, hosts, upstream.Host, "server = \""+upstream.URL+"\"\n\n[host.\""+front.srv.URL+"\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
	ctx := context.Background()
	ts := newTestStore(t)
	if _, err := ts.op(t, Options{HostsDir: hosts}).Pull(ctx, upstream.Ref("lib/m", "1")); err != nil {
		t.Fatal(err)
	}
	for _, l := range img.Layers {
		if front.gets(l.Digest) != 1 {
			t.Fatalf("layer %s was not fetched through the mirror", l.Digest)
		}
	}
	// The pull-through cache stores what it served; it does so in the
	// background, so wait (bounded) for the files to appear.
	deadline := time.Now().Add(20 * time.Second)
	for {
		cached := registryBlobs(t, mirror.StorageDir)
		if cached[img.Layers[0].Digest] && cached[img.Layers[1].Digest] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirror storage never held the layers: %v", cached)
		}
		time.Sleep(50 * time.Millisecond)
	}
	br, err := ts.rec.Lookup(ctx, img.Layers[0].Digest)
	if err != nil || !slices.Equal(br.Sources, []Source{{Host: upstream.Host, Repo: "lib/m"}}) {
		t.Fatalf("source label should name the namespace, not the mirror: %+v %v", br, err)
	}

	mirror.Stop()
	front.srv.Close()
	ts = newTestStore(t)
	if _, err := ts.op(t, Options{HostsDir: hosts, Timeout: 5 * time.Second}).Pull(ctx, upstream.Ref("lib/m", "1")); err != nil {
		t.Fatalf("server fallback with the mirror stopped: %v", err)
	}
	for _, b := range img.Blobs {
		ts.requireBlob(t, b)
	}
}

func TestPullBadHostsToml(t *testing.T) {
	hosts := t.TempDir()
	f := writeHostsToml(t, hosts, "127.0.0.1:1", "server = \"http://127.0.0.1:1\"\n[host.\"x\"\ncapabilities = 1\n")
	ts := newTestStore(t)
	_, err := ts.op(t, Options{HostsDir: hosts}).Pull(context.Background(), "127.0.0.1:1/a:b")
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), f+":2:") {
		t.Fatalf("want ErrInvalidArgument naming %s line 2, got %v", f, err)
	}
}

// fakeRegistry serves one image from memory, with a hook to corrupt blobs.
func fakeRegistry(t *testing.T, img *testimage.Image, serveBlob func(w http.ResponseWriter, d digest.Digest, b []byte)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.HasSuffix(r.URL.Path, "/manifests/1") || strings.HasSuffix(r.URL.Path, "/manifests/"+img.Manifest.Digest.String()):
			w.Header().Set("Content-Type", img.Manifest.MediaType)
			w.Header().Set("Docker-Content-Digest", img.Manifest.Digest.String())
			w.Header().Set("Content-Length", itoa(img.Manifest.Size))
			if r.Method == http.MethodGet {
				w.Write(img.ManifestBytes())
			}
		case strings.Contains(r.URL.Path, "/blobs/"):
			d := digest.Digest(r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
			b, ok := img.Blobs[d]
			if !ok {
				http.NotFound(w, r)
				return
			}
			serveBlob(w, d, b)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestPullBadBytesRefused(t *testing.T) {
	img := buildImage(t, "bad", 2, linuxAMD64, false)
	bad := img.Layers[1].Digest
	for name, serve := range map[string]func(w http.ResponseWriter, d digest.Digest, b []byte){
		"flipped byte": func(w http.ResponseWriter, d digest.Digest, b []byte) {
			if d == bad {
				b = append([]byte{}, b...)
				b[len(b)/2] ^= 0xff
			}
			w.Write(b)
		},
		"extra bytes": func(w http.ResponseWriter, d digest.Digest, b []byte) {
			if d == bad {
				b = append(append([]byte{}, b...), "more"...)
			}
			w.Write(b)
		},
		"short": func(w http.ResponseWriter, d digest.Digest, b []byte) {
			if d == bad {
				w.Header().Set("Content-Length", itoa(int64(len(b)-3)))
				b = b[:len(b)-3]
			}
			w.Write(b)
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := fakeRegistry(t, img, serve)
			host := strings.TrimPrefix(srv.URL, "http://")
			ts := newTestStore(t)
			_, err := ts.op(t, Options{PlainHTTP: true, Timeout: 5 * time.Second}).Pull(context.Background(), host+"/bad/img:1")
			if err == nil {
				t.Fatal("pull of corrupt content succeeded")
			}
			if !errors.Is(err, errdefs.ErrDigestMismatch) {
				t.Fatalf("want ErrDigestMismatch, got %v", err)
			}
			if ts.has(t, bad) {
				t.Fatal("corrupt blob was committed")
			}
			if _, err := ts.rec.image(host + "/bad/img:1"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("image recorded after a failed pull: %v", err)
			}
			// Other blobs may keep partial downloads for a resume; the
			// corrupt one keeps nothing.
			if st, err := ts.store.Status(context.Background(), ingestRef(bad)); !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("unverified bytes left in ingest: %+v %v", st, err)
			}
		})
	}
}

// TestPullResumesWithRange cuts the connection in the middle of a layer,
// then checks that the next pull asks only for the rest.
func TestPullResumesWithRange(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	big := testimage.Layer{Files: []testimage.File{testimage.Reg("big", 0o644, randomText(256<<10))}, Compression: "none"}
	img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{big}})
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, reg, "r/big", "1", img)
	layer := img.Layers[0]
	const cut = 100 << 10

	target, _ := url.Parse(reg.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	var mu sync.Mutex
	broken := true
	var ranges []string
	snapshot := func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), ranges...) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+layer.Digest.String()) || r.Method != http.MethodGet {
			rp.ServeHTTP(w, r)
			return
		}
		rg := r.Header.Get("Range")
		mu.Lock()
		ranges = append(ranges, rg)
		isBroken := broken
		mu.Unlock()
		if isBroken && rg != "" {
			// The first pull tried to resume: end it here, leaving its
			// partial ingest behind.
			cancel1()
			<-r.Context().Done()
			return
		}
		if isBroken {
			b := img.Blobs[layer.Digest]
			w.Header().Set("Content-Length", itoa(int64(len(b))))
			w.WriteHeader(http.StatusOK)
			w.Write(b[:cut])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		rp.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/r/big:1"

	ts := newTestStore(t)
	_, err = ts.op(t, Options{PlainHTTP: true}).Pull(ctx1, ref)
	if err == nil {
		t.Fatal("first pull should have been cut off")
	}
	st, err := ts.store.Status(context.Background(), ingestRef(layer.Digest))
	if err != nil || st.Offset != cut {
		t.Fatalf("partial ingest after the cut: %+v %v", st, err)
	}
	if rs := snapshot(); len(rs) != 2 || rs[1] != "bytes=102400-" {
		t.Fatalf("in-pull resume should ask for the rest: %q", rs)
	}

	mu.Lock()
	broken = false
	ranges = nil
	mu.Unlock()
	if _, err := ts.op(t, Options{PlainHTTP: true}).Pull(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	if rs := snapshot(); len(rs) != 1 || rs[0] != "bytes=102400-" {
		t.Fatalf("second pull should resume with Range: %q", rs)
	}
	ts.requireBlob(t, img.Blobs[layer.Digest])
}

func TestFetchBlobLazy(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "lazy", 2, linuxAMD64, false)
	pushImage(t, reg, "lazy/app", "1", img)
	ts := newTestStore(t)
	f := ts.op(t, Options{PlainHTTP: true, Lazy: true})
	ctx := context.Background()
	if _, err := f.Pull(ctx, reg.Ref("lazy/app", "1")); err != nil {
		t.Fatal(err)
	}
	ts.requireBlob(t, img.ConfigBytes())
	l := img.Layers[1]
	if ts.has(t, l.Digest) {
		t.Fatal("lazy pull fetched a layer")
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- f.FetchBlob(ctx, l.Digest) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ts.requireBlob(t, img.Blobs[l.Digest])
	if err := f.FetchBlob(ctx, digest.FromString("unknown")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unknown blob: %v", err)
	}
}

// A lazy pull hands each layer to its caller as soon as the manifest's
// bytes are verified, before the manifest is committed to the store.
func TestLazyPullFindsLayersBeforeStoringManifest(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "early", 3, linuxAMD64, false)
	pushImage(t, reg, "lazy/early", "1", img)
	ts := newTestStore(t)
	ctx := context.Background()
	p, err := ts.fetcher.Resolve(ctx, reg.Ref("lazy/early", "1"), Options{PlainHTTP: true, Lazy: true, HostsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var found []digest.Digest
	early := true
	h := p.HandlerThen(func(_ context.Context, l ocispec.Descriptor) {
		mu.Lock()
		defer mu.Unlock()
		found = append(found, l.Digest)
		early = early && !ts.has(t, img.Manifest.Digest)
	})
	if err := Dispatch(ctx, p.Limit(), h, p.Target); err != nil {
		t.Fatal(err)
	}
	var want []digest.Digest
	for _, l := range img.Layers {
		want = append(want, l.Digest)
	}
	if !slices.Equal(found, want) {
		t.Fatalf("layers found %v, want %v in manifest order", found, want)
	}
	if !early {
		t.Fatal("a layer was found only once its manifest was stored")
	}
	if !ts.has(t, img.Manifest.Digest) {
		t.Fatal("the manifest was not stored")
	}
}

func randomText(n int) string {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = 'a' + byte(x%26)
	}
	return string(b)
}
