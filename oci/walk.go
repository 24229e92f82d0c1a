package oci

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
)

// MaxDepth bounds how deep a walk goes: real images nest an index at most
// once, so this only stops hostile chains of indexes.
const MaxDepth = 10

// Handler handles one descriptor of a walk and returns the children to
// visit next (none to stop there).
type Handler interface {
	Handle(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error)
}

// HandlerFunc is a function that is a Handler.
type HandlerFunc func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return f(ctx, desc)
}

// Walk calls h on each descriptor of descs and, depth first and in order,
// on the children h returns. Each digest is handled once; a document that
// reaches itself or a chain deeper than MaxDepth is an error.
func Walk(ctx context.Context, h Handler, descs ...ocispec.Descriptor) error {
	w := walker{h: h, seen: map[digest.Digest]bool{}}
	return w.walk(ctx, descs, nil)
}

type walker struct {
	h    Handler
	seen map[digest.Digest]bool
}

func (w *walker) walk(ctx context.Context, descs []ocispec.Descriptor, stack []digest.Digest) error {
	for _, d := range descs {
		for _, a := range stack {
			if a == d.Digest {
				return fmt.Errorf("index %s references itself: %w", stack[len(stack)-1], errdefs.ErrInvalidArgument)
			}
		}
		if w.seen[d.Digest] {
			continue
		}
		if len(stack) >= MaxDepth {
			return fmt.Errorf("documents nested deeper than %d at %s: %w", MaxDepth, d.Digest, errdefs.ErrInvalidArgument)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		w.seen[d.Digest] = true
		children, err := w.h.Handle(ctx, d)
		if err != nil {
			return err
		}
		if err := w.walk(ctx, children, append(stack, d.Digest)); err != nil {
			return err
		}
	}
	return nil
}

// ReadFunc returns the bytes of a document.
type ReadFunc func(ctx context.Context, desc ocispec.Descriptor) ([]byte, error)

// childrenHandler reads each index or manifest with read and returns its
// children; other descriptors (configs, layers) have none and are not read.
func childrenHandler(read ReadFunc) HandlerFunc {
	return func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if !IsIndex(desc.MediaType) && !IsManifest(desc.MediaType) {
			return nil, nil
		}
		data, err := read(ctx, desc)
		if err != nil {
			return nil, err
		}
		return Children(desc, data)
	}
}

// Manifests walks from root through nested indexes and returns the
// manifest descriptors it reaches, in index order, each once; keep, when
// non-nil, chooses which of an index's entries to follow.
func Manifests(ctx context.Context, read ReadFunc, root ocispec.Descriptor, keep func([]ocispec.Descriptor) []ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	h := HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if IsManifest(desc.MediaType) {
			out = append(out, desc)
			return nil, nil
		}
		if !IsIndex(desc.MediaType) {
			return nil, nil
		}
		data, err := read(ctx, desc)
		if err != nil {
			return nil, err
		}
		doc, err := Parse(desc, data)
		if err != nil {
			return nil, err
		}
		entries := doc.Index.Manifests
		if keep != nil {
			entries = keep(entries)
		}
		return entries, nil
	})
	err := Walk(ctx, h, root)
	return out, err
}
