package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
	"github.com/casfs/casfs/oci"
)

// teeCollector hands every blob a pipe and keeps what came through it and
// how the pipe ended.
type teeCollector struct {
	mu   sync.Mutex
	wg   sync.WaitGroup
	got  map[digest.Digest][]byte
	errs map[digest.Digest]error
}

func newTeeCollector() *teeCollector {
	return &teeCollector{got: map[digest.Digest][]byte{}, errs: map[digest.Digest]error{}}
}

func (c *teeCollector) tee(d ocispec.Descriptor) TeeWriter {
	pr, pw := io.Pipe()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		b, err := io.ReadAll(pr)
		c.mu.Lock()
		c.got[d.Digest], c.errs[d.Digest] = b, err
		c.mu.Unlock()
	}()
	return pw
}

// pullWith dispatches the pull's handlers under a wrapper that offers each
// blob's download to tee (when non-nil) and calls done once it is present,
// as the store's unpacker does.
func (tf *testFetcher) pullWith(ctx context.Context, ref string, tee func(ocispec.Descriptor) TeeWriter, done func(ocispec.Descriptor)) error {
	p, err := tf.ts.fetcher.Resolve(ctx, ref, tf.opts)
	if err != nil {
		return err
	}
	h := p.Handler()
	return Dispatch(ctx, p.Limit(), oci.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if isDocument(d) {
			return h.Handle(ctx, d)
		}
		if tee != nil {
			if w := tee(d); w != nil {
				ctx = WithTee(ctx, w)
			}
		}
		c, err := h.Handle(ctx, d)
		if err == nil && done != nil {
			done(d)
		}
		return c, err
	}), p.Target)
}

func TestPullHandlersAndTee(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "tee", 3, linuxAMD64, false)
	pushImage(t, reg, "tee/app", "1", img)
	ts := newTestStore(t)
	tc := newTeeCollector()
	var mu sync.Mutex
	var done []digest.Digest
	f := ts.op(t, Options{PlainHTTP: true})
	err := f.pullWith(context.Background(), reg.Ref("tee/app", "1"), tc.tee, func(d ocispec.Descriptor) {
		mu.Lock()
		done = append(done, d.Digest)
		mu.Unlock()
		if !ts.has(t, d.Digest) {
			t.Errorf("handler returned for %s before the blob is in the store", d.Digest)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	tc.wg.Wait()
	if len(done) != 1+len(img.Layers) {
		t.Fatalf("%d blobs handled, want config and %d layers", len(done), len(img.Layers))
	}
	for _, l := range img.Layers {
		if tc.errs[l.Digest] != nil || !bytes.Equal(tc.got[l.Digest], img.Blobs[l.Digest]) {
			t.Errorf("tee of %s: %d bytes (want %d), err %v", l.Digest, len(tc.got[l.Digest]), l.Size, tc.errs[l.Digest])
		}
	}

	// A second pull has everything: nothing is downloaded, and every copy
	// offered ends at once with errTeeStopped and no bytes.
	tc2 := newTeeCollector()
	if err := f.pullWith(context.Background(), reg.Ref("tee/app", "1"), tc2.tee, nil); err != nil {
		t.Fatal(err)
	}
	tc2.wg.Wait()
	if len(tc2.got) != 1+len(img.Layers) {
		t.Fatalf("%d copies offered, want %d", len(tc2.got), 1+len(img.Layers))
	}
	for d, b := range tc2.got {
		if len(b) != 0 || !errors.Is(tc2.errs[d], errTeeStopped) {
			t.Errorf("copy of local blob %s: %d bytes, err %v; want none and errTeeStopped", d, len(b), tc2.errs[d])
		}
	}
}

// TestTeeAcrossResume: a download cut in the middle resumes with Range and
// the copy goes on seamlessly; a registry that ignores Range makes the
// download start over, which stops the copy with errTeeStopped. A reader
// that goes away never fails the download.
func TestTeeAcrossResume(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	big := testimage.Layer{Files: []testimage.File{testimage.Reg("big", 0o644, randomText(256<<10))}, Compression: "none"}
	img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{big}})
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, reg, "tee/big", "1", img)
	layer := img.Layers[0]
	blob := img.Blobs[layer.Digest]
	target, _ := url.Parse(reg.URL)

	for _, tc := range []struct {
		name        string
		ignoreRange bool
		wantErr     error
	}{{"range", false, nil}, {"no-range", true, errTeeStopped}} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			cuts := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasSuffix(r.URL.Path, "/blobs/"+layer.Digest.String()) {
					proxyTo(target, w, r)
					return
				}
				mu.Lock()
				first := cuts == 0
				cuts++
				mu.Unlock()
				if first {
					// Announce the whole blob, send a third, drop the connection.
					w.Header().Set("Content-Length", itoa(int64(len(blob))))
					w.WriteHeader(http.StatusOK)
					w.Write(blob[:len(blob)/3])
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler)
				}
				if tc.ignoreRange {
					r.Header.Del("Range")
				}
				proxyTo(target, w, r)
			}))
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "http://")
			ts := newTestStore(t)
			col := newTeeCollector()
			if err := ts.op(t, Options{PlainHTTP: true}).pullWith(context.Background(), host+"/tee/big:1", col.tee, nil); err != nil {
				t.Fatal(err)
			}
			col.wg.Wait()
			ts.requireBlob(t, blob)
			if cuts < 2 {
				t.Fatalf("the blob was fetched %d times; the cut did not happen", cuts)
			}
			err := col.errs[layer.Digest]
			if tc.wantErr == nil {
				if err != nil || !bytes.Equal(col.got[layer.Digest], blob) {
					t.Fatalf("copy across a resume: %d of %d bytes, err %v", len(col.got[layer.Digest]), len(blob), err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("copy of a restarted download ended with %v, want %v", err, tc.wantErr)
			}
		})
	}

	// A reader that closes at once does not fail the pull.
	ts := newTestStore(t)
	gone := func(ocispec.Descriptor) TeeWriter {
		pr, pw := io.Pipe()
		pr.CloseWithError(errors.New("reader gone"))
		return pw
	}
	if err := ts.op(t, Options{PlainHTTP: true}).pullWith(context.Background(), reg.Ref("tee/big", "1"), gone, nil); err != nil {
		t.Fatal(err)
	}
	ts.requireBlob(t, blob)
}

func proxyTo(target *url.URL, w http.ResponseWriter, r *http.Request) {
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, target.String()+r.URL.RequestURI(), r.Body)
	req.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// TestPullWaitsForAnotherDownloadOfABlob: while another writer holds a
// blob's ingest (another pull of an image sharing the layer), a pull waits
// for it instead of failing with ErrLocked, and takes the blob it committed.
func TestPullWaitsForAnotherDownloadOfABlob(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "wait", 1, linuxAMD64, false)
	pushImage(t, reg, "wait/app", "1", img)
	layer := img.Layers[0]
	ts := newTestStore(t)
	w, err := ts.store.Writer(context.Background(), ingestRef(layer.Digest), cas.WriterOpts{Expected: layer.Digest, Total: layer.Size})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	started := make(chan struct{})
	rec := &startRecorder{want: layer.Digest, started: started}
	f := ts.op(t, Options{PlainHTTP: true, Progress: rec})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := f.PullContent(ctx, reg.Ref("wait/app", "1"))
		errc <- err
	}()
	<-started
	// The other writer finishes: the waiting pull finds the blob.
	if _, err := w.Write(img.Blobs[layer.Digest]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(context.Background(), layer.Size, layer.Digest); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("pull while another writer held the layer: %v", err)
	}
	cancel()
	ts.requireBlob(t, img.Blobs[layer.Digest])

	// Held and never finished: the pull waits until its context ends.
	img2 := buildImage(t, "wait2", 1, linuxAMD64, false)
	pushImage(t, reg, "wait/app", "2", img2)
	l2 := img2.Layers[0]
	w2, err := ts.store.Writer(context.Background(), ingestRef(l2.Digest), cas.WriterOpts{Expected: l2.Digest, Total: l2.Size})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	started2 := make(chan struct{})
	f = ts.op(t, Options{PlainHTTP: true, Progress: &startRecorder{want: l2.Digest, started: started2}})
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() {
		_, err := f.PullContent(ctx2, reg.Ref("wait/app", "2"))
		errc <- err
	}()
	<-started2
	cancel2()
	if err := <-errc; !errors.Is(err, context.Canceled) || errors.Is(err, errdefs.ErrLocked) {
		t.Fatalf("pull cancelled while waiting: %v", err)
	}
}

// startRecorder closes started when the blob want starts.
type startRecorder struct {
	want    digest.Digest
	started chan struct{}
	once    sync.Once
}

func (r *startRecorder) Start(d ocispec.Descriptor) {
	if d.Digest == r.want {
		r.once.Do(func() { close(r.started) })
	}
}
func (r *startRecorder) Update(ocispec.Descriptor, int64)     {}
func (r *startRecorder) Done(ocispec.Descriptor, error, bool) {}

// A tee whose reader never reads (an unpacker waiting on another layer)
// does not keep a cancelled pull from ending: the copy is closed with the
// pull's context, which frees the blocked download.
func TestCancelledPullFreesBlockedTee(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "stuck", 1, linuxAMD64, false)
	pushImage(t, reg, "tee/stuck", "1", img)
	ts := newTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var pipes []*io.PipeReader
	stuck := func(d ocispec.Descriptor) TeeWriter {
		pr, pw := io.Pipe() // nobody reads: the first Write blocks
		mu.Lock()
		pipes = append(pipes, pr)
		mu.Unlock()
		go cancel()
		return pw
	}
	f := ts.op(t, Options{PlainHTTP: true})
	done := make(chan error, 1)
	go func() { done <- f.pullWith(ctx, reg.Ref("tee/stuck", "1"), stuck, nil) }()
	bound, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled pull: %v, want context.Canceled", err)
		}
	case <-bound.Done():
		t.Fatal("cancelled pull still blocked on its tee after a minute")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pipes) == 0 {
		t.Fatal("no blob was offered to the tee")
	}
	for _, pr := range pipes {
		if _, err := pr.Read(make([]byte, 1)); !errors.Is(err, errTeeStopped) || !errors.Is(err, context.Canceled) {
			t.Errorf("tee reader after the cancel: %v, want errTeeStopped and the cause", err)
		}
	}
}
