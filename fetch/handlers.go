package fetch

import (
	"context"
	"fmt"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// A pull is a composition of handlers (oci.Handler: one descriptor in,
// the children to visit next out) that Dispatch runs over an image: Fetch
// makes each document and blob present and names a document's children,
// Platforms narrows an index's entries, LayersBy hands a manifest's layers
// to another handler (a lazy pull records them instead of fetching them),
// and a caller wraps the whole to act on what arrives (the store unpacks
// layers while they download).

// Dispatch calls h on descs and on the children it returns, breadth first:
// the descriptors of one level run concurrently, at most limit at a time
// and started in order (so that lower layers start before higher ones),
// and their children, in order, make the next level. Each digest is
// handled once; a document that reaches itself or a chain deeper than
// oci.MaxDepth is an error. The first error cancels the rest.
func Dispatch(ctx context.Context, limit int, h oci.Handler, descs ...ocispec.Descriptor) error {
	type item struct {
		desc  ocispec.Descriptor
		stack []digest.Digest // the documents above desc
	}
	seen := map[digest.Digest]bool{}
	var level []item
	for _, d := range descs {
		level = append(level, item{desc: d})
	}
	for depth := 0; len(level) > 0; depth++ {
		if depth > oci.MaxDepth {
			return fmt.Errorf("documents nested deeper than %d at %s: %w", oci.MaxDepth, level[0].desc.Digest, errdefs.ErrInvalidArgument)
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(max(limit, 1))
		children := make([][]ocispec.Descriptor, len(level))
		for i, it := range level {
			if slices.Contains(it.stack, it.desc.Digest) {
				_ = g.Wait()
				return fmt.Errorf("index %s references itself: %w", it.stack[len(it.stack)-1], errdefs.ErrInvalidArgument)
			}
			if seen[it.desc.Digest] {
				continue
			}
			seen[it.desc.Digest] = true
			if gctx.Err() != nil {
				break
			}
			g.Go(func() error {
				c, err := h.Handle(gctx, it.desc)
				children[i] = c
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var next []item
		for i, cs := range children {
			stack := append(slices.Clip(level[i].stack), level[i].desc.Digest)
			for _, c := range cs {
				next = append(next, item{desc: c, stack: stack})
			}
		}
		level = next
	}
	return nil
}

// isDocument: desc names an index or a manifest, or says nothing (an
// index entry without a media type, sniffed once fetched).
func isDocument(desc ocispec.Descriptor) bool {
	mt := desc.MediaType
	return mt == "" || oci.IsIndex(mt) || oci.IsManifest(mt) || oci.IsSchema1(mt)
}

// ManifestParts splits the children Fetch returns for a manifest into its
// config and layers; ok is false for an index's entries and for a blob.
func ManifestParts(children []ocispec.Descriptor) (config ocispec.Descriptor, layers []ocispec.Descriptor, ok bool) {
	if len(children) == 0 || isDocument(children[0]) {
		return ocispec.Descriptor{}, nil, false
	}
	return children[0], children[1:], true
}

// Platforms narrows the entries of each index h handles to the platform p
// (all: every entry is kept); an index with no entry for p is an error.
func Platforms(h oci.Handler, p oci.Platform, all bool) oci.Handler {
	return oci.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		children, err := h.Handle(ctx, desc)
		if _, _, parts := ManifestParts(children); err != nil || all || len(children) == 0 || parts {
			return children, err
		}
		kept := p.Select(children)
		if len(kept) == 0 {
			return nil, fmt.Errorf("index %s has no manifest for platform %s (it has %s): %w", desc.Digest, p, indexPlatforms(children), errdefs.ErrNotFound)
		}
		return kept, nil
	})
}

// LayersBy hands the layers of each manifest h handles to layer and its
// config back to h, concurrently (limit at a time, the config first), and
// returns no children: the manifest is done when all are. The config does
// not wait for the layers: a lazy pull builds its tree from it while the
// layers' records are written.
func LayersBy(h, layer oci.Handler, limit int) oci.Handler {
	return oci.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		children, err := h.Handle(ctx, desc)
		config, layers, ok := ManifestParts(children)
		if err != nil || !ok {
			return children, err
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(max(limit, 1))
		g.Go(func() error {
			_, err := h.Handle(gctx, config)
			return err
		})
		for _, l := range layers {
			g.Go(func() error {
				_, err := layer.Handle(gctx, l)
				return err
			})
		}
		return nil, g.Wait()
	})
}

type teeKey struct{}

// WithTee asks the fetch of the next blob under ctx to copy its bytes to
// w as they download (see TeeWriter). Only a download that this call
// leads feeds w: a blob that is present, or that another operation is
// downloading, ends w with errTeeStopped and the caller reads the blob.
func WithTee(ctx context.Context, w TeeWriter) context.Context {
	return context.WithValue(ctx, teeKey{}, w)
}

func teeFrom(ctx context.Context) TeeWriter {
	w, _ := ctx.Value(teeKey{}).(TeeWriter)
	return w
}

// Pull is one pull from a resolved reference: its handlers share the
// operation's options and the repository the reference names.
type Pull struct {
	Name   string             // normalised reference
	Target ocispec.Descriptor // what the reference resolved to
	o      *op
	src    source
	// target holds Target's bytes when resolving fetched them
	// (Options.ResolveByGet), unverified until Fetch stores them.
	target []byte
}

// Resolve resolves ref for a pull with opts.
func (f *Fetcher) Resolve(ctx context.Context, ref string, opts Options) (*Pull, error) {
	o, err := f.op(opts)
	if err != nil {
		return nil, err
	}
	pr, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	return o.resolvePull(ctx, pr)
}

func (o *op) resolvePull(ctx context.Context, pr Reference) (*Pull, error) {
	limit := int64(-1)
	if o.opts.ResolveByGet && pr.Digest == "" {
		limit = o.opts.MaxManifestSize
	}
	desc, data, err := o.resolver.resolve(ctx, pr, limit)
	if err != nil {
		return nil, err
	}
	src, err := o.source(pr.Host, pr.Repo)
	if err != nil {
		return nil, err
	}
	return &Pull{Name: pr.Name, Target: desc, o: o, src: src, target: data}, nil
}

// Platform is the platform the pull's options choose.
func (p *Pull) Platform() oci.Platform { return p.o.platform }

// Limit is how many blobs the pull moves at once.
func (p *Pull) Limit() int { return p.o.opts.MaxConcurrent }

// Fetch is the handler that makes desc present in the store, verified
// and recorded with its source: an index or a manifest through the
// registry's manifest endpoint, returning its entries or its config and
// layers; any other blob through the blob endpoint (resumable, shared with
// concurrent operations, copied to the tee ctx carries), returning none.
func (p *Pull) Fetch(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return p.fetch(ctx, desc, nil)
}

// fetch is Fetch, handing each manifest's bytes to verified (see
// op.fetchManifest).
func (p *Pull) fetch(ctx context.Context, desc ocispec.Descriptor, verified func([]byte, ocispec.Descriptor)) ([]ocispec.Descriptor, error) {
	// The target is a document whatever it says (fetchManifest refuses
	// what is not one).
	if isDocument(desc) || desc.Digest == p.Target.Digest {
		var have []byte
		if desc.Digest == p.Target.Digest {
			have = p.target
		}
		data, desc, err := p.o.fetchManifest(ctx, p.src, desc, have, verified)
		if err != nil {
			return nil, err
		}
		doc, err := oci.Parse(desc, data)
		if err != nil {
			return nil, err
		}
		if doc.Index != nil {
			if len(doc.Index.Manifests) == 0 {
				return nil, fmt.Errorf("index %s lists no manifests: %w", desc.Digest, errdefs.ErrNotFound)
			}
			return doc.Index.Manifests, nil
		}
		return append([]ocispec.Descriptor{doc.Manifest.Config}, doc.Manifest.Layers...), nil
	}
	if _, err := p.o.fetchBlob(ctx, p.src, desc); err != nil {
		return nil, err
	}
	return nil, p.o.recordBlob(ctx, p.src, desc)
}

// Handler is the pull's own composition: Fetch, with each index's entries
// narrowed to the pull's platform(s) and, for a lazy pull, layers recorded
// instead of fetched.
func (p *Pull) Handler() oci.Handler { return p.HandlerThen(nil) }

// HandlerThen is Handler for a pull whose layers, in a lazy pull, are
// each handed to found as soon as their manifest's bytes are verified,
// before the manifest is committed and the layers' records are written: a
// lazy pull starts reading what it needs of them (eStargz TOCs) while the
// records are written and the config is still on its way. found may be
// nil; it must not block.
func (p *Pull) HandlerThen(found func(context.Context, ocispec.Descriptor)) oci.Handler {
	h := oci.Handler(oci.HandlerFunc(p.Fetch))
	if p.o.opts.Lazy {
		if found != nil {
			h = oci.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
				return p.fetch(ctx, desc, func(data []byte, desc ocispec.Descriptor) {
					if doc, err := oci.Parse(desc, data); err == nil && doc.Manifest != nil {
						for _, l := range doc.Manifest.Layers {
							found(ctx, l)
						}
					}
				})
			})
		}
		h = LayersBy(h, oci.HandlerFunc(p.Record), p.Limit())
	}
	return Platforms(h, p.o.platform, p.o.opts.AllPlatforms)
}

// ReadRange fills p with the bytes at off of layer desc of this pull, with
// one Range request to the registry the pull resolved against (mirrors
// first): a lazy pull reads a layer's table of contents before the layer
// is recorded. Nothing is stored; the caller verifies what it keeps.
func (p *Pull) ReadRange(ctx context.Context, desc ocispec.Descriptor, off int64, buf []byte) error {
	n := int64(len(buf))
	if off < 0 || n <= 0 || off+n > desc.Size {
		return fmt.Errorf("blob %s: range %d+%d outside its %d bytes: %w", desc.Digest, off, n, desc.Size, errdefs.ErrInvalidArgument)
	}
	var errs []error
	if p.o.readRangeFrom(ctx, p.src, desc.Digest, off, buf, &errs) {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, ctx.Err())
	}
	return fmt.Errorf("blob %s bytes %d-%d: %w", desc.Digest, off, off+n-1, joinErrors(errs))
}

// Record is the handler that records desc with its source without
// fetching it: the layers of a lazy pull, fetched on first read.
func (p *Pull) Record(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	if err := p.o.rec.Lease(ctx, []digest.Digest{desc.Digest}); err != nil {
		return nil, err
	}
	return nil, p.o.recordBlob(ctx, p.src, desc)
}

// Result reads back, from the store, the manifests the pull reached from
// its target for its platform(s), in index order.
func (p *Pull) Result(ctx context.Context) (PullResult, error) {
	res := PullResult{Name: p.Name, Target: p.Target}
	root := p.Target
	if root.MediaType == "" {
		data, err := p.o.readLocal(ctx, root)
		if err != nil {
			return PullResult{}, err
		}
		root.MediaType = oci.Sniff(data)
	}
	var keep func([]ocispec.Descriptor) []ocispec.Descriptor
	if !p.o.opts.AllPlatforms {
		keep = p.o.platform.Select
	}
	mans, err := oci.Manifests(ctx, p.o.readLocal, root, keep)
	if err != nil {
		return PullResult{}, err
	}
	for _, md := range mans {
		data, err := p.o.readLocal(ctx, md)
		if err != nil {
			return PullResult{}, err
		}
		doc, err := oci.Parse(md, data)
		if err != nil {
			return PullResult{}, err
		}
		res.Manifests = append(res.Manifests, *doc.Manifest)
		res.ManifestDescs = append(res.ManifestDescs, md)
	}
	return res, nil
}
