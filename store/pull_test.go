package store

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/faultproxy"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// getCount is how many GETs the proxy saw for paths matching pattern.
func getCount(p *faultproxy.Proxy, pattern string) int {
	re := regexp.MustCompile(pattern)
	n := 0
	for _, r := range p.Requests() {
		if r.Method == http.MethodGet && re.MatchString(r.Path) {
			n++
		}
	}
	return n
}

// Two pulls of one image at the same time share the store's one fetcher:
// every blob is downloaded once in all, and both pulls end with the same
// image, unpacked.
func TestConcurrentPullsShareDownloads(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	img, proxy := behindProxy(t, "lab/shared")
	ctx := context.Background()
	// The lowest layer's download holds until both pulls wait for it.
	held := make(chan struct{})
	var holdOnce sync.Once
	stalled := img.Layers[0].Digest
	if err := proxy.Set(faultproxy.Blob(stalled), faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodGet,
		OnHold: func() { holdOnce.Do(func() { close(held) }) }}); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{}, 2) // one per pull that asked for the stalled layer
	progress := func() ProgressFunc {
		var once sync.Once
		return func(ev ProgressEvent) {
			if ev.Digest == stalled && ev.Status == "waiting" {
				once.Do(func() { waiting <- struct{}{} })
			}
		}
	}
	s := openTemp(t)
	ref := proxy.Host + "/lab/shared:1"
	type result struct {
		info ImageInfo
		err  error
	}
	results := make(chan result, 2)
	for range 2 {
		opts := PullOptions{RegistryOptions: RegistryOptions{PlainHTTP: true, HostsDir: t.TempDir()}, Progress: progress()}
		go func() {
			info, err := s.Pull(ctx, ref, opts)
			results <- result{info, err}
		}()
	}
	bound := time.NewTimer(2 * time.Minute)
	defer bound.Stop()
	for _, c := range []chan struct{}{held, waiting, waiting} {
		select {
		case <-c:
		case r := <-results:
			t.Fatalf("a pull ended while the layer was held: %+v", r)
		case <-bound.C:
			t.Fatal("the pulls never both waited for the held layer")
		}
	}
	proxy.Clear(faultproxy.Blob(stalled))
	var infos []ImageInfo
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatalf("pull: %v", r.err)
		}
		infos = append(infos, r.info)
	}
	if infos[0].Name != infos[1].Name || infos[0].Target.Digest != img.Manifest.Digest || infos[1].Target.Digest != img.Manifest.Digest || infos[0].Size != infos[1].Size {
		t.Fatalf("the pulls made different images: %+v and %+v", infos[0], infos[1])
	}
	for _, d := range append([]digest.Digest{img.Config.Digest}, digestsOf(img.Layers)...) {
		if n := getCount(proxy, faultproxy.Blob(d)); n != 1 {
			t.Errorf("blob %s: %d GETs, want 1", d, n)
		}
	}
	requireUnpacked(t, s, ref)
	// Later lazy fetches of the layers talk plain HTTP, as the pulls did.
	for _, l := range img.Layers {
		b, err := s.ContentInfo(ctx, l.Digest)
		if err != nil || b.Labels[labelPlainHTTP] != "true" {
			t.Errorf("layer %s: labels %v, %v; want %s=true", l.Digest, b.Labels, err, labelPlainHTTP)
		}
	}
}

// requireUnpacked fails t unless every layer of image ref has its snapshot.
func requireUnpacked(t *testing.T, s *Local, ref string) {
	t.Helper()
	ctx := context.Background()
	_, il, err := s.imageLayersOf(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := s.Snapshotter()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range il.ChainIDs {
		if _, err := sn.Stat(ctx, c.String()); err != nil {
			t.Errorf("layer %d (%s) not unpacked: %v", i, c, err)
		}
	}
}

// behindProxy pushes a three-layer image as repo:1 to a new registry and
// puts a fault proxy in front of it.
func behindProxy(t *testing.T, repo string) (*testimage.Image, *faultproxy.Proxy) {
	t.Helper()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := gcImage(t, "", "base", "mid", "top")
	if err := testimage.Push(context.Background(), reg.URL, repo, "1", img.Blobs, img.Manifest, reg.Client()); err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.Start(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	return img, proxy
}

// pullWatch is a pull running in the background, and the bound on a
// test's waits for it.
type pullWatch struct {
	t     *testing.T
	done  chan error
	bound <-chan time.Time
}

// pullInBackground starts s.Pull(ref, opts); the test's waits for it
// (until, end) share one minute.
func pullInBackground(t *testing.T, s *Local, ref string, opts PullOptions) pullWatch {
	bound := time.NewTimer(time.Minute)
	t.Cleanup(func() { bound.Stop() })
	w := pullWatch{t: t, done: make(chan error, 1), bound: bound.C}
	go func() {
		_, err := s.Pull(context.Background(), ref, opts)
		w.done <- err
	}()
	return w
}

// until polls cond while the pull runs: the pull ending first or the
// bound passing fails the test.
func (w pullWatch) until(what string, cond func() bool) {
	w.t.Helper()
	for !cond() {
		select {
		case err := <-w.done:
			w.t.Fatalf("pull ended before %s: %v", what, err)
		case <-w.bound:
			w.t.Fatalf("timed out before %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// end returns the pull's error once it ends.
func (w pullWatch) end() error {
	w.t.Helper()
	select {
	case err := <-w.done:
		return err
	case <-w.bound:
		w.t.Fatal("the pull did not end")
		return nil
	}
}

// closed reports whether ch is closed, for pullWatch.until.
func closed(ch <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

func digestsOf(ds []ocispec.Descriptor) []digest.Digest {
	out := make([]digest.Digest, len(ds))
	for i, d := range ds {
		out[i] = d.Digest
	}
	return out
}

// What a push fetches (the other platforms of a pulled index) is recorded
// as a pull records it: media type, both times, the repository it came
// from; and so is everything the pull fetched.
func TestPushRecordsWhatItFetches(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	amd := gcImage(t, "linux/amd64", "amd")
	arm := gcImage(t, "linux/arm64", "arm")
	idx, err := testimage.BuildIndex([]*testimage.Image{amd, arm}, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, im := range idx.Images {
		if err := testimage.Push(ctx, reg.URL, "lab/multi", "", im.Blobs, im.Manifest, reg.Client()); err != nil {
			t.Fatal(err)
		}
	}
	if err := testimage.Push(ctx, reg.URL, "lab/multi", "1", idx.Blobs, idx.Desc, reg.Client()); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.TempDir(), Options{Create: true, Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	start := time.Now().UTC()
	ro := RegistryOptions{PlainHTTP: true, HostsDir: t.TempDir()}
	ref := reg.Ref("lab/multi", "1")
	if _, err := s.Pull(ctx, ref, PullOptions{RegistryOptions: ro, NoUnpack: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ContentInfo(ctx, arm.Layers[0].Digest); err == nil {
		t.Fatal("the pull of one platform recorded the other's layer")
	}
	other := testenv.StartRegistry(t, testenv.RegistryOptions{})
	if err := s.Push(ctx, ref, other.Ref("lab/copy", "1"), PushOptions{RegistryOptions: ro}); err != nil {
		t.Fatal(err)
	}
	end := time.Now().UTC()
	all := map[digest.Digest]bool{idx.Desc.Digest: true}
	for _, im := range idx.Images {
		for d := range im.Blobs {
			all[d] = true
		}
	}
	for d := range all {
		ci, err := s.ContentInfo(ctx, d)
		if err != nil {
			t.Fatalf("record of %s: %v", d, err)
		}
		if ci.CreatedAt.Before(start) || ci.CreatedAt.After(end) || ci.UpdatedAt.Before(ci.CreatedAt) || ci.UpdatedAt.After(end) {
			t.Errorf("blob %s: created %v, updated %v; want both within the test (%v to %v), updated not before created", d, ci.CreatedAt, ci.UpdatedAt, start, end)
		}
		if got := ci.Labels[labelSourcePrefix+reg.Host]; got != "lab/multi" {
			t.Errorf("blob %s: source label %q, want lab/multi", d, got)
		}
		if ci.MediaType == "" {
			t.Errorf("blob %s: no media type recorded", d)
		}
	}
}

// A pull's layers download while its config is still on its way: the
// unpacking waits for the config, the downloads do not. A config the
// registry does not have fails the pull, which records no image.
func TestPullFetchesConfigBesideLayers(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	img, proxy := behindProxy(t, "lab/config")
	ctx := context.Background()
	ref := proxy.Host + "/lab/config:1"
	opts := PullOptions{RegistryOptions: RegistryOptions{PlainHTTP: true, HostsDir: t.TempDir()}}

	held := make(chan struct{})
	if err := proxy.Set(faultproxy.Blob(img.Config.Digest), faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodGet,
		OnHold: func() { close(held) }}); err != nil {
		t.Fatal(err)
	}
	s := openTemp(t)
	w := pullInBackground(t, s, ref, opts)
	w.until("the config was asked for", closed(held))
	for _, l := range img.Layers {
		w.until("layer "+l.Digest.String()+" was downloaded while the config was held", func() bool {
			return getCount(proxy, faultproxy.Blob(l.Digest)) > 0
		})
	}
	if imgs, err := s.ListImages(ctx); err != nil || len(imgs) != 0 {
		t.Fatalf("images while the config is held: %v, %v", imgs, err)
	}
	proxy.Clear(faultproxy.Blob(img.Config.Digest))
	if err := w.end(); err != nil {
		t.Fatalf("pull: %v", err)
	}
	requireUnpacked(t, s, ref)

	// Another store, the config now missing from the registry.
	if err := proxy.Set(faultproxy.Blob(img.Config.Digest), faultproxy.Fault{Kind: faultproxy.Status, Status: http.StatusNotFound}); err != nil {
		t.Fatal(err)
	}
	s2 := openTemp(t)
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := s2.Pull(pctx, ref, opts)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), img.Config.Digest.Encoded()[:12]) {
		t.Fatalf("pull with its config missing: %v, want not found naming %s", err, img.Config.Digest)
	}
	if imgs, err := s2.ListImages(ctx); err != nil || len(imgs) != 0 {
		t.Fatalf("images after the failed pull: %v, %v", imgs, err)
	}
}

// A first pull of a name resolves its tag with one GET of the manifest and
// uses those bytes; a re-pull asks with HEAD and, the manifest being
// local, GETs no manifest at all.
func TestFirstPullResolvesWithGet(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	img, proxy := behindProxy(t, "lab/resolve")
	ctx := context.Background()
	ref := proxy.Host + "/lab/resolve:1"
	opts := PullOptions{RegistryOptions: RegistryOptions{PlainHTTP: true, HostsDir: t.TempDir()}, NoUnpack: true}
	seen := 0 // requests of earlier pulls
	manifestRequests := func() []string {
		var out []string
		for _, r := range proxy.Requests()[seen:] {
			if strings.Contains(r.Path, "/manifests/") {
				out = append(out, r.Method+" "+r.Path[strings.LastIndex(r.Path, "/")+1:])
			}
		}
		return out
	}
	s := openTemp(t)
	info, err := s.Pull(ctx, ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	if info.Target.Digest != img.Manifest.Digest {
		t.Fatalf("pulled %s, want %s", info.Target.Digest, img.Manifest.Digest)
	}
	if got := manifestRequests(); len(got) != 1 || got[0] != "GET 1" {
		t.Fatalf("manifest requests of a first pull: %v, want one GET of the tag", got)
	}
	if _, err := s.ContentInfo(ctx, img.Manifest.Digest); err != nil {
		t.Fatalf("the manifest resolving fetched was not stored: %v", err)
	}
	seen = len(proxy.Requests())
	if _, err := s.Pull(ctx, ref, opts); err != nil {
		t.Fatal(err)
	}
	if got := manifestRequests(); len(got) != 1 || got[0] != "HEAD 1" {
		t.Fatalf("manifest requests of a re-pull: %v, want one HEAD of the tag", got)
	}
}
