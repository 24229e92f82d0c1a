package fetch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// graph is a handler over a fixed tree: each digest's children, and the
// order in which descriptors were handled.
type graph struct {
	mu       sync.Mutex
	children map[digest.Digest][]ocispec.Descriptor
	handled  []digest.Digest
	fail     digest.Digest
}

func (g *graph) Handle(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	g.mu.Lock()
	g.handled = append(g.handled, d.Digest)
	g.mu.Unlock()
	if d.Digest == g.fail {
		return nil, errors.New("handler failed")
	}
	return g.children[d.Digest], nil
}

func node(name, mt string, p *ocispec.Platform) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.FromString(name), Size: 1, Platform: p}
}

func TestDispatch(t *testing.T) {
	ctx := context.Background()
	idx := node("index", ocispec.MediaTypeImageIndex, nil)
	m1 := node("m1", ocispec.MediaTypeImageManifest, &ocispec.Platform{OS: "linux", Architecture: "amd64"})
	m2 := node("m2", ocispec.MediaTypeImageManifest, &ocispec.Platform{OS: "linux", Architecture: "arm64"})
	cfg := node("cfg", ocispec.MediaTypeImageConfig, nil)
	l1, l2 := node("l1", ocispec.MediaTypeImageLayerGzip, nil), node("l2", ocispec.MediaTypeImageLayerGzip, nil)
	g := &graph{children: map[digest.Digest][]ocispec.Descriptor{
		idx.Digest: {m1, m2},
		m1.Digest:  {cfg, l1, l2},
		m2.Digest:  {cfg, l2, l1}, // shared blobs are handled once
	}}
	if err := Dispatch(ctx, 1, g, idx); err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{idx.Digest, m1.Digest, m2.Digest, cfg.Digest, l1.Digest, l2.Digest}
	if !slices.Equal(g.handled, want) {
		t.Fatalf("handled %v, want level by level in order %v", g.handled, want)
	}

	// Platforms keeps an index's entry for the platform; LayersBy sends the
	// layers elsewhere and hands the config back to its handler itself.
	g.handled = nil
	recorded := &graph{}
	amd := oci.NewPlatform(ocispec.Platform{OS: "linux", Architecture: "amd64"})
	if err := Dispatch(ctx, 2, Platforms(LayersBy(g, recorded, 2), amd, false), idx); err != nil {
		t.Fatal(err)
	}
	if want := []digest.Digest{idx.Digest, m1.Digest, cfg.Digest}; !slices.Equal(g.handled, want) {
		t.Fatalf("handled %v, want %v", g.handled, want)
	}
	slices.Sort(recorded.handled)
	wantLayers := []digest.Digest{l1.Digest, l2.Digest}
	slices.Sort(wantLayers)
	if want := wantLayers; !slices.Equal(recorded.handled, want) {
		t.Fatalf("layers given to the layer handler: %v, want %v", recorded.handled, want)
	}
	mips := oci.NewPlatform(ocispec.Platform{OS: "linux", Architecture: "mips64"})
	if err := Dispatch(ctx, 2, Platforms(g, mips, false), idx); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "linux/amd64, linux/arm64") {
		t.Fatalf("index without the platform: %v", err)
	}

	// A handler's error ends the dispatch with it.
	g.handled, g.fail = nil, m1.Digest
	if err := Dispatch(ctx, 1, g, idx); err == nil || err.Error() != "handler failed" {
		t.Fatalf("failing handler: %v", err)
	}
	if slices.Contains(g.handled, cfg.Digest) {
		t.Fatal("children of a failed level were handled")
	}

	// A document that reaches itself is refused, not walked forever.
	self := &graph{children: map[digest.Digest][]ocispec.Descriptor{idx.Digest: {m1}, m1.Digest: {idx}}}
	if err := Dispatch(ctx, 1, self, idx); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "references itself") {
		t.Fatalf("cycle: %v", err)
	}
}

// LayersBy does not keep a manifest's config waiting for its layers: each
// layer's handler here returns only once the config was handled.
func TestLayersByHandlesConfigBesideLayers(t *testing.T) {
	m := node("m", ocispec.MediaTypeImageManifest, nil)
	cfg := node("cfg", ocispec.MediaTypeImageConfig, nil)
	l1, l2 := node("l1", ocispec.MediaTypeImageLayerGzip, nil), node("l2", ocispec.MediaTypeImageLayerGzip, nil)
	g := &graph{children: map[digest.Digest][]ocispec.Descriptor{m.Digest: {cfg, l1, l2}}}
	configDone := make(chan struct{})
	docs := oci.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		c, err := g.Handle(ctx, d)
		if d.Digest == cfg.Digest {
			close(configDone)
		}
		return c, err
	})
	layers := oci.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		select {
		case <-configDone:
			return nil, nil
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("layer %s waited for the config", d.Digest)
		}
	})
	if err := Dispatch(context.Background(), 3, LayersBy(docs, layers, 3), m); err != nil {
		t.Fatal(err)
	}
	if want := []digest.Digest{m.Digest, cfg.Digest}; !slices.Equal(g.handled, want) {
		t.Fatalf("handled %v, want %v: the config once, by LayersBy", g.handled, want)
	}
}
