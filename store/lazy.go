package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/fetch"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/layers"
	"github.com/casfs/casfs/layers/merged"
	"github.com/casfs/casfs/lazy"
)

// labelTOCRef on a layer's record names its eStargz TOC blob, so that
// garbage collection keeps the TOC while the layer is kept.
const labelTOCRef = "containerd.io/gc.ref.content.estargz.toc"

// labelNoComplete on a layer's record keeps it lazy: no background
// completion (image pull --lazy-complete=false).
const labelNoComplete = "casfs.lazy/complete"

// tocDigestOf returns the TOC digest annotation of an eStargz layer.
func tocDigestOf(l ocispec.Descriptor) (digest.Digest, bool) {
	v, ok := l.Annotations[lazy.TOCDigestAnnotation]
	if !ok {
		return "", false
	}
	return digest.Digest(v), true
}

// lazyCacheDir holds the chunks of one layer read lazily:
// <root>/lazy/sha256/<hex>/{data,ranges}.
func (s *Local) lazyCacheDir(d digest.Digest) string {
	return filepath.Join(s.root, "lazy", d.Algorithm().String(), d.Encoded())
}

// tocOpens opens the eStargz layers of one lazy pull, each as soon as its
// manifest lists it (fetch.Pull.HandlerThen): footers and TOCs are
// fetched, verified and decoded while the layers' records are written and
// the config is still on its way. Layers go in parallel: each costs one or
// two round trips to the registry and the CPU to decode its TOC. Until the
// pull ends (stop), gc keeps the chunk caches of the layers it opens.
type tocOpens struct {
	s      *Local
	pull   *fetch.Pull // reads the layers' tails before they are recorded
	ctx    context.Context
	cancel context.CancelFunc
	g      *errgroup.Group
	sem    chan struct{} // bounds the layers opened at once

	mu     sync.Mutex
	opened []*tocOpen
	seen   map[digest.Digest]bool

	staged *tocBatch
}

type tocOpen struct {
	layer, toc digest.Digest
	ll         *lazy.Layer   // set when g.Wait returns nil
	done       chan struct{} // closed when the open ended, err says how
	err        error
}

func (s *Local) newTOCOpens(ctx context.Context, p *fetch.Pull) *tocOpens {
	staged := &tocBatch{s: s, ctx: ctx}
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	return &tocOpens{s: s, pull: p, ctx: gctx, cancel: cancel, g: g,
		sem: make(chan struct{}, maxTOCFetches), seen: map[digest.Digest]bool{}, staged: staged}
}

// start opens layer l in the background unless it is local already, is
// not eStargz (it is fetched whole on first access), or was started.
func (t *tocOpens) start(ctx context.Context, name string, l ocispec.Descriptor) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen[l.Digest] {
		return
	}
	t.seen[l.Digest] = true
	if _, err := t.s.blobs.Info(ctx, l.Digest); err == nil {
		return // local already: served from its snapshot
	}
	toc, ok := tocDigestOf(l)
	if !ok {
		slog.Info("lazy pull: layer is not eStargz, fetched whole on first access", "image", name, "layer", l.Digest)
		return
	}
	o := &tocOpen{layer: l.Digest, toc: toc, done: make(chan struct{})}
	t.opened = append(t.opened, o)
	t.s.opening.add(l.Digest)
	t.g.Go(func() error {
		defer close(o.done)
		select {
		case t.sem <- struct{}{}:
		case <-t.ctx.Done():
			o.err = t.ctx.Err()
			return o.err
		}
		defer func() { <-t.sem }()
		ll, err := t.s.openTOCForPull(t.ctx, t.pull, l, toc, func(js []byte) { t.staged.add(toc, js) })
		if err != nil {
			o.err = fmt.Errorf("pull %s: layer %s: %w", name, l.Digest, err)
			return o.err
		}
		o.ll = ll
		return nil
	})
}

// pending returns the open of layer d, if this pull started one.
func (t *tocOpens) pending(d digest.Digest) (*tocOpen, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range t.opened {
		if o.layer == d {
			return o, true
		}
	}
	return nil, false
}

// started reports whether the pull is opening any layer.
func (t *tocOpens) started() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.opened) > 0
}

// wait returns the opened layers once every one started is open, or the
// first error.
func (t *tocOpens) wait() ([]*tocOpen, error) {
	err := t.g.Wait()
	t.cancel()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.opened, nil
}

// stop ends the opens still running (a pull that failed), waits for them,
// and hands the layers' chunk caches over to gc: by then a pull that
// succeeded has written the layers' records.
func (t *tocOpens) stop() {
	t.cancel()
	t.g.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range t.opened {
		t.s.opening.done(o.layer)
	}
	t.opened = nil
	t.staged.abort()
}

// tocBatch stages the TOCs of one lazy pull in a blob batch, each as soon
// as it is verified, in the background: the write of a TOC (megabytes of
// JSON for a large layer) runs beside its decode instead of after the
// last layer opened, while the first read of the image waits.
type tocBatch struct {
	s   *Local
	ctx context.Context // the pull's: the opens' ends before the writes do

	wg  sync.WaitGroup
	mu  sync.Mutex // guards what follows; held while a TOC is written
	b   *cas.Batch
	err error
}

// add stages js, the verified TOC d, in the background.
func (tb *tocBatch) add(d digest.Digest, js []byte) {
	tb.wg.Add(1)
	go func() {
		defer tb.wg.Done()
		tb.mu.Lock()
		defer tb.mu.Unlock()
		if tb.err == nil && tb.b == nil {
			tb.b, tb.err = tb.s.blobs.NewBatch()
		}
		if tb.err == nil {
			if err := tb.b.AddVerifiedBytes(tb.ctx, js, d); err != nil {
				tb.err = fmt.Errorf("store TOC %s: %w", d, err)
			}
		}
	}()
}

// batch waits for the TOCs added so far and returns the batch that holds
// them (a new one when none was added), for the caller to complete and
// commit; abort then drops nothing of it.
func (tb *tocBatch) batch() (*cas.Batch, error) {
	tb.wg.Wait()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.err != nil {
		return nil, tb.err
	}
	b := tb.b
	tb.b = nil
	if b == nil {
		return tb.s.blobs.NewBatch()
	}
	return b, nil
}

// abort drops the TOCs staged and not taken (a failed pull).
func (tb *tocBatch) abort() {
	tb.wg.Wait()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.b != nil {
		tb.b.Abort()
		tb.b = nil
	}
}

// pullTOCs is the eStargz part of a lazy pull: it opens every layer with a
// TOC digest annotation that opens has not started yet, waits for all,
// keeps each TOC as a blob referenced from the layer's record, and keeps
// the fetched bytes in the layer's chunk cache.
func (s *Local) pullTOCs(ctx context.Context, opens *tocOpens, res fetch.PullResult, noComplete bool) error {
	for _, m := range res.Manifests {
		for _, l := range m.Layers {
			opens.start(ctx, res.Name, l)
		}
	}
	// The tree is built while the TOCs open: each layer is applied once
	// its own TOC is decoded, the lower ones while the higher ones are
	// still on their way. A pull that opens no TOC builds no tree ahead:
	// its layers are local, or fetched whole on first use.
	if opens.started() {
		if mans, err := s.imageManifests(ctx, res.Target); err == nil && len(mans) > 0 {
			if il, err := s.imageLayers(ctx, s.pickManifest(mans)); err == nil {
				s.prebuildTree(ctx, il, opens)
			}
		}
	}
	tocs, err := opens.wait()
	if err != nil {
		return err
	}
	if len(tocs) == 0 {
		return nil
	}
	start := time.Now()
	// The TOCs are stored together and not synced: each is verified data
	// that can be fetched again, and the pull waits for no disk flush.
	var ds []digest.Digest
	for _, t := range tocs {
		ds = append(ds, t.toc)
	}
	if err := index.AddToLease(ctx, ds); err != nil {
		return err
	}
	// Most are staged already (tocBatch); a layer opened from a cache of
	// an earlier pull is staged here.
	b, err := opens.staged.batch()
	if err != nil {
		return err
	}
	defer b.Abort()
	for _, t := range tocs {
		if err := b.AddVerifiedBytes(ctx, t.ll.TOC(), t.toc); err != nil {
			return fmt.Errorf("store TOC %s: %w", t.toc, err)
		}
	}
	if _, err := b.CommitUnsynced(ctx); err != nil {
		return fmt.Errorf("store TOCs: %w", err)
	}
	db, err := s.Index()
	if err != nil {
		return err
	}
	defer s.changed()
	// One transaction for every TOC's record and every layer's labels: a
	// commit each cost a few milliseconds of the lazy start.
	set, del := map[string]string{}, []string{labelNoComplete}
	if noComplete {
		set[labelNoComplete], del = "false", nil
	}
	err = db.Update(ctx, func(tx *index.Tx) error {
		blobs := index.TxTable(tx, db.Blobs())
		now := time.Now().UTC()
		for _, t := range tocs {
			_, err := blobs.Get(t.toc.String())
			if errors.Is(err, errdefs.ErrNotFound) {
				err = blobs.Put(t.toc.String(), index.Blob{Digest: t.toc, Size: int64(len(t.ll.TOC())), CreatedAt: now, UpdatedAt: now})
			}
			if err != nil {
				return fmt.Errorf("record TOC %s: %w", t.toc, err)
			}
			l, err := blobs.Get(t.layer.String())
			if err != nil {
				return notFound(t.layer, err)
			}
			set[labelTOCRef] = t.toc.String()
			l.Labels, l.UpdatedAt = editLabels(l.Labels, set, del), now
			if err := blobs.Put(t.layer.String(), l); err != nil {
				return fmt.Errorf("label layer %s: %w", t.layer, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, t := range tocs {
		slog.Info("lazy pull: eStargz layer served file by file, TOC fetched and verified", "layer", t.layer, "toc", t.toc, "fetched", t.ll.Fetched())
	}
	slog.Debug("lazy pull: TOCs stored and layers recorded", "image", res.Name, "layers", len(tocs), "took", time.Since(start))
	return nil
}

// maxTOCFetches bounds the layers whose TOCs one lazy pull fetches at once.
const maxTOCFetches = 4

// openTOCForPull opens a layer for a lazy pull: fetches and verifies its
// TOC. In the mount daemon the opened layer is kept for the mount, which
// then serves the image without reading or parsing the TOC again; its
// later reads go through the mount's registry settings.
func (s *Local) openTOCForPull(ctx context.Context, p *fetch.Pull, l ocispec.Descriptor, toc digest.Digest, verified func([]byte)) (*lazy.Layer, error) {
	ll := s.lazyLayers
	if ll != nil {
		if x, ok := ll.cached(l.Digest); ok {
			return x.Layer, nil
		}
	}
	var later atomic.Pointer[lazy.RangeReader]
	remote := func(ctx context.Context, off int64, buf []byte) error {
		if r := later.Load(); r != nil {
			return (*r)(ctx, off, buf)
		}
		return p.ReadRange(ctx, l, off, buf)
	}
	opts := lazy.Options{Dir: s.lazyCacheDir(l.Digest), Remote: remote, TOCVerified: verified}
	if ll != nil {
		opts.Timeout = ll.timeout
	}
	y, err := lazy.Open(ctx, l, toc, opts)
	if err != nil {
		return nil, err
	}
	if ll == nil {
		y.Close()
		return y, nil
	}
	mount := ll.remote(l.Digest)
	later.Store(&mount)
	return ll.adopt(l.Digest, y).Layer, nil
}

// layerStates says which layers are local, which are lazy eStargz layers
// (with what their chunk caches hold) and which are fetched whole on first
// access.
func (s *Local) layerStates(ctx context.Context, layers []ocispec.Descriptor) []LayerState {
	out := make([]LayerState, len(layers))
	for i, l := range layers {
		st := LayerState{Digest: l.Digest, Size: l.Size, State: "remote"}
		if _, err := s.blobs.Info(ctx, l.Digest); err == nil {
			st.State = "local"
		} else if _, ok := tocDigestOf(l); ok {
			st.State = "lazy"
			st.Cached = lazy.CachedBytes(s.lazyCacheDir(l.Digest))
		}
		out[i] = st
	}
	return out
}

// lazyLayers keeps the eStargz layers a mount serves, opened once each.
type lazyLayers struct {
	s       *Local
	ro      RegistryOptions
	timeout time.Duration

	// ctx ends background completion when the store closes; complete
	// turns it on (the mount daemon's default).
	ctx      context.Context
	complete bool

	mu         sync.Mutex
	open       map[digest.Digest]*layerFiles
	completing map[string]bool // rootfs ids with a completion running
	flight     singleflight.Group
	// callers are the registry options lazy pulls through the socket
	// came with, by registry source (lazy_callers.go); in memory only.
	callers map[fetch.Source]RegistryOptions
}

// layerFiles serves the files of one eStargz layer: chunk by chunk until
// the layer is unpacked, then from its snapshot directory (opened files,
// which FUSE passes through). Files opened before the switch keep reading
// from the chunk cache.
type layerFiles struct {
	*lazy.Layer
	local atomic.Pointer[string] // the layer's snapshot directory, once unpacked
}

// Open opens from the snapshot once the layer is local (an *os.File, which
// the mount passes through), else chunk by chunk.
func (f *layerFiles) Open(ctx context.Context, p string) (merged.Content, error) {
	if dir := f.local.Load(); dir != nil {
		return merged.Dir(*dir).Open(ctx, p)
	}
	return f.Layer.Open(ctx, p)
}

// cached returns the layer if it is open already.
func (ll *lazyLayers) cached(d digest.Digest) (*layerFiles, bool) {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	x, ok := ll.open[d]
	return x, ok
}

// adopt keeps y, opened by a lazy pull, for the mount; if another open of
// the same layer won, y is closed and that one is returned.
func (ll *lazyLayers) adopt(d digest.Digest, y *lazy.Layer) *layerFiles {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if x, ok := ll.open[d]; ok {
		y.Close()
		return x
	}
	x := &layerFiles{Layer: y}
	ll.open[d] = x
	slog.Info("lazy layer: serving eStargz layer file by file from its TOC", "layer", d, "cached", y.Cached())
	return x
}

// remote reads ranges of a recorded layer blob with the mount's registry
// settings; the fetcher is made on the first read (again after a failure).
func (ll *lazyLayers) remote(d digest.Digest) lazy.RangeReader {
	var (
		mu sync.Mutex
		r  lazy.RangeReader
	)
	return func(ctx context.Context, off int64, p []byte) error {
		mu.Lock()
		if r == nil {
			var err error
			if r, err = ll.s.rangeReader(ctx, ll.ro, d); err != nil {
				mu.Unlock()
				return err
			}
		}
		rr := r
		mu.Unlock()
		return rr(ctx, off, p)
	}
}

func (ll *lazyLayers) get(ctx context.Context, l ocispec.Descriptor, toc digest.Digest) (*layerFiles, error) {
	if x, ok := ll.cached(l.Digest); ok {
		return x, nil
	}
	v, err, _ := ll.flight.Do(l.Digest.String(), func() (any, error) {
		if x, ok := ll.cached(l.Digest); ok {
			return x, nil
		}
		y, err := lazy.Open(ctx, l, toc, lazy.Options{Dir: ll.s.lazyCacheDir(l.Digest), Remote: ll.remote(l.Digest), Timeout: ll.timeout})
		if err != nil {
			return nil, err
		}
		return ll.adopt(l.Digest, y), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*layerFiles), nil
}

// rangeReader reads byte ranges of a recorded layer blob from the registry
// its source label names.
func (s *Local) rangeReader(ctx context.Context, ro RegistryOptions, d digest.Digest) (lazy.RangeReader, error) {
	b, err := s.ContentInfo(ctx, d)
	if err != nil {
		return nil, err
	}
	ro = s.registryFor(b, ro)
	ro.PlainHTTP = ro.PlainHTTP || b.Labels[labelPlainHTTP] == "true"
	fo := s.fetchOptions(ro, "", false, false, 1, nil, "")
	return func(ctx context.Context, off int64, p []byte) error {
		return s.fetch.ReadBlobRange(ctx, d, off, p, fo)
	}, nil
}

// rootfsSources returns the layers of a rootfs id, lowest first, for the
// merged tree: snapshot directories for unpacked layers, and for eStargz
// layers that are not local yet (when the mount can fetch) their TOC
// listing with chunk reads. An image with other layers missing is
// unpacked first, as RootfsLayers does.
func (s *Local) rootfsSources(ctx context.Context, id string) ([]merged.Layer, error) {
	dirsOnly := func() ([]merged.Layer, error) {
		dirs, err := s.RootfsLayers(ctx, id)
		if err != nil {
			return nil, err
		}
		out := make([]merged.Layer, len(dirs))
		for i, d := range dirs {
			out[i] = merged.Dir(d)
		}
		return out, nil
	}
	if s.lazyLayers == nil {
		return dirsOnly()
	}
	sn, err := s.Snapshotter()
	if err != nil {
		return nil, err
	}
	if _, err := sn.Stat(ctx, "sha256:"+id); err == nil {
		return dirsOnly()
	}
	il, ok, err := s.findRootfs(ctx, id)
	if err != nil || !ok {
		return dirsOnly()
	}
	out, ok, err := s.lazySources(ctx, sn, il, nil)
	if err != nil {
		return nil, err
	}
	if !ok {
		return dirsOnly()
	}
	s.lazyLayers.completeLater(id, il)
	return out, nil
}

// lazySources is rootfsSources for an image with eStargz layers not
// unpacked yet: snapshot directories up to the highest unpacked layer,
// TOC listings above it. ok is false when a layer above is not eStargz
// (the image is unpacked instead).
//
// Layers that opens (when not nil) is still opening are handed over as
// they are: their Walk waits for the open.
func (s *Local) lazySources(ctx context.Context, sn *layers.Snapshotter, il ImageLayers, opens *tocOpens) ([]merged.Layer, bool, error) {
	// The highest unpacked layer brings the ones below it.
	top := -1
	for i := len(il.Layers) - 1; i >= 0; i-- {
		if _, err := sn.Stat(ctx, il.ChainIDs[i].String()); err == nil {
			top = i
			break
		}
	}
	var out []merged.Layer
	if top >= 0 {
		lowers, err := sn.Lowers(ctx, il.ChainIDs[top].String())
		if err != nil {
			return nil, false, err
		}
		for i := len(lowers) - 1; i >= 0; i-- {
			out = append(out, merged.Dir(filepath.Clean(lowers[i])))
		}
	}
	for _, l := range il.Layers[top+1:] {
		toc, ok := tocDigestOf(l)
		if !ok {
			return nil, false, nil
		}
		if opens != nil {
			if o, ok := opens.pending(l.Digest); ok {
				out = append(out, &pendingFiles{o: o, ll: s.lazyLayers})
				continue
			}
		}
		x, err := s.lazyLayers.get(ctx, l, toc)
		if err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				return nil, false, fmt.Errorf("layer %s: %w", l.Digest, errdefs.ErrUnavailable)
			}
			return nil, false, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		out = append(out, x)
	}
	return out, true, nil
}

// pendingFiles is a layer whose TOC a lazy pull is still opening, for the
// tree built ahead: it is walked, and its files opened, once the open
// ended.
type pendingFiles struct {
	o  *tocOpen
	ll *lazyLayers
}

func (p *pendingFiles) files(ctx context.Context) (*layerFiles, error) {
	select {
	case <-p.o.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if p.o.err != nil {
		return nil, p.o.err
	}
	if x, ok := p.ll.cached(p.o.layer); ok {
		return x, nil
	}
	return nil, fmt.Errorf("layer %s: not open: %w", p.o.layer, errdefs.ErrUnavailable)
}

func (p *pendingFiles) Walk(ctx context.Context, fn func(*merged.Entry) error) error {
	x, err := p.files(ctx)
	if err != nil {
		return err
	}
	return x.Walk(ctx, fn)
}

func (p *pendingFiles) Open(ctx context.Context, path string) (merged.Content, error) {
	x, err := p.files(ctx)
	if err != nil {
		return nil, err
	}
	return x.Open(ctx, path)
}
