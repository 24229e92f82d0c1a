package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// TestImagesNotImplemented: image calls a store does not implement yet fail
// through the socket exactly as they do embedded.
func TestImagesNotImplemented(t *testing.T) {
	imageParity(t, newFakeStore(), errdefs.ErrNotImplemented)
}

// TestImagesParityLocal runs the same calls over the embedded store,
// whatever they answer today (not implemented, or real results and errors).
func TestImagesParityLocal(t *testing.T) {
	imageParity(t, localBackend().open(t), nil)
}

func imageParity(t *testing.T, s store.API, class error) {
	ctx := t.Context()
	c := serve(t, s).client
	// 127.0.0.1:1 refuses at once: a pull fails without leaving the machine.
	name := "127.0.0.1:1/lab/nginx:alpine"
	reg := store.RegistryOptions{PlainHTTP: true}
	pull := store.PullOptions{RegistryOptions: reg, NoUnpack: true}
	type call struct {
		name      string
		viaClient func() (any, error)
		embedded  func() (any, error)
	}
	calls := []call{
		{"pull", func() (any, error) { return c.Pull(ctx, name, pull) },
			func() (any, error) { return s.Pull(ctx, name, pull) }},
		{"fetch", func() (any, error) { return c.FetchContent(ctx, name, pull) },
			func() (any, error) { return s.FetchContent(ctx, name, pull) }},
		{"push", func() (any, error) { return nil, c.Push(ctx, name, "", store.PushOptions{RegistryOptions: reg}) },
			func() (any, error) { return nil, s.Push(ctx, name, "", store.PushOptions{RegistryOptions: reg}) }},
		{"list", func() (any, error) { return c.ListImages(ctx) },
			func() (any, error) { return s.ListImages(ctx) }},
		{"get", func() (any, error) { return c.GetImage(ctx, name, "") },
			func() (any, error) { return s.GetImage(ctx, name, "") }},
		{"tag", func() (any, error) { return nil, c.TagImage(ctx, name, []string{"lab/y:2"}) },
			func() (any, error) { return nil, s.TagImage(ctx, name, []string{"lab/y:2"}) }},
		{"remove", func() (any, error) { return nil, c.RemoveImage(ctx, name) },
			func() (any, error) { return nil, s.RemoveImage(ctx, name) }},
	}
	for _, call := range calls {
		got, err := call.viaClient()
		want, wantErr := call.embedded()
		if class != nil {
			sameErr(t, call.name, err, wantErr, class)
			continue
		}
		sameResult(t, call.name, got, err, want, wantErr)
	}
}

// TestImageNamesTravelIntact: names with slashes, colons and '@' reach the
// store unchanged.
func TestImageNamesTravelIntact(t *testing.T) {
	ctx := t.Context()
	f := newFakeStore()
	c := serve(t, f).client
	for _, name := range []string{"localhost:5000/a/b/c:tag", "x@sha256:" + digest.FromString("y").Encoded(), "with space&x=1", ""} {
		for _, platform := range []string{"", "linux/arm64/v8"} {
			_, err := c.GetImage(ctx, name, platform)
			_, want := f.GetImage(ctx, name, platform)
			sameErr(t, "GetImage "+name+" "+platform, err, want, errdefs.ErrNotImplemented)
		}
		err := c.RemoveImage(ctx, name)
		want := f.RemoveImage(ctx, name)
		sameErr(t, "RemoveImage "+name, err, want, errdefs.ErrNotImplemented)
	}
}

func TestPullProgress(t *testing.T) {
	ctx := t.Context()
	f := newFakeStore()
	target := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("manifest"), Size: 8}
	var sent []store.ProgressEvent
	for i := range 50 {
		sent = append(sent, store.ProgressEvent{Digest: digest.FromString(fmt.Sprint(i)), Total: 100, Done: int64(i), Status: "fetching"})
	}
	var gotOpts store.PullOptions
	f.pull = func(ctx context.Context, ref string, opts store.PullOptions) (store.ImageInfo, error) {
		gotOpts = opts
		for _, ev := range sent {
			opts.Progress(ev)
		}
		if ref == "lab/fails:1" {
			return store.ImageInfo{}, fmt.Errorf("pull %s: manifest unknown: %w", ref, errdefs.ErrNotFound)
		}
		if ref == "lab/refused:1" {
			return store.ImageInfo{}, fmt.Errorf("pull %s: registry said no: %w", ref, errdefs.ErrUnauthorized)
		}
		return store.ImageInfo{Name: ref, Target: target, Size: 1234}, nil
	}
	c := serve(t, f).client

	var got []store.ProgressEvent
	opts := store.PullOptions{RegistryOptions: store.RegistryOptions{Username: "u", Password: "p", PlainHTTP: true}, Platform: "linux/amd64", Lazy: true,
		Progress: func(ev store.ProgressEvent) { got = append(got, ev) }}
	info, err := c.Pull(ctx, "lab/x:1", opts)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if !slices.Equal(got, sent) {
		t.Errorf("events arrived as %d %v, want the %d sent, in order", len(got), got, len(sent))
	}
	jsonEq(t, "pull result", info, store.ImageInfo{Name: "lab/x:1", Target: target, Size: 1234})
	if gotOpts.Password != "p" || gotOpts.Username != "u" || !gotOpts.PlainHTTP || gotOpts.Platform != "linux/amd64" || !gotOpts.Lazy {
		t.Errorf("options reached the store as %+v", gotOpts)
	}

	desc, err := c.FetchContent(ctx, "lab/x:1", store.PullOptions{})
	if err != nil || desc.Digest != target.Digest {
		t.Errorf("fetch: %v %v", desc, err)
	}

	got = nil
	_, err = c.Pull(ctx, "lab/fails:1", opts)
	_, want := f.Pull(ctx, "lab/fails:1", store.PullOptions{Progress: func(store.ProgressEvent) {}})
	sameErr(t, "pull failing after events", err, want, errdefs.ErrNotFound)
	if !slices.Equal(got, sent) {
		t.Errorf("a failing pull delivered %d events, want %d", len(got), len(sent))
	}
	err = c.Push(ctx, "lab/refused:1", "", store.PushOptions{})
	want = f.Push(ctx, "lab/refused:1", "", store.PushOptions{Progress: func(store.ProgressEvent) {}})
	sameErr(t, "push refused", err, want, errdefs.ErrUnauthorized)
	if err := c.Push(ctx, "lab/x:1", "lab/z:1", store.PushOptions{}); err != nil {
		t.Errorf("push: %v", err)
	}
}

// TestProgressFromManyGoroutines: a store reporting from concurrent
// fetches must not interleave lines. Each event changes its blob's status,
// so that none is coalesced (TestProgressStreamCoalescesCounts).
func TestProgressFromManyGoroutines(t *testing.T) {
	f := newFakeStore()
	const workers, each = 8, 200
	f.pull = func(ctx context.Context, ref string, opts store.PullOptions) (store.ImageInfo, error) {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := digest.FromString(fmt.Sprint(w))
				for i := range each {
					opts.Progress(store.ProgressEvent{Digest: d, Done: int64(i), Total: each, Status: []string{"fetching", "unpacking"}[i%2]})
				}
			}()
		}
		wg.Wait()
		return store.ImageInfo{Name: ref}, nil
	}
	c := serve(t, f).client
	last := map[digest.Digest]int64{}
	n := 0
	info, err := c.Pull(t.Context(), "lab/x:1", store.PullOptions{Progress: func(ev store.ProgressEvent) {
		if prev, ok := last[ev.Digest]; ok && ev.Done != prev+1 {
			t.Errorf("%s: event %d after %d", ev.Digest, ev.Done, prev)
		}
		last[ev.Digest] = ev.Done
		n++
	}})
	if err != nil || info.Name != "lab/x:1" {
		t.Fatalf("pull: %v %+v", err, info)
	}
	if n != workers*each {
		t.Errorf("%d events, want %d", n, workers*each)
	}
}

func TestPullErrorBeforeEvents(t *testing.T) {
	f := newFakeStore()
	f.pull = func(ctx context.Context, ref string, opts store.PullOptions) (store.ImageInfo, error) {
		return store.ImageInfo{}, fmt.Errorf("pull %q: not a reference: %w", ref, errdefs.ErrInvalidArgument)
	}
	c := serve(t, f).client
	_, err := c.Pull(t.Context(), "UPPER", store.PullOptions{})
	_, want := f.Pull(t.Context(), "UPPER", store.PullOptions{})
	sameErr(t, "pull refused at once", err, want, errdefs.ErrInvalidArgument)
	var re *RemoteError
	if !errors.As(err, &re) || re.Kind != "invalid_argument" {
		t.Errorf("error %v is not a RemoteError of kind invalid_argument", err)
	}
}
