package lazy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/gcburst"
	"github.com/casfs/casfs/internal/hugeheap"
	"github.com/casfs/casfs/layers/merged"
)

// Options configure a lazy layer.
type Options struct {
	// Dir holds the layer's cached chunks (created when missing).
	Dir string
	// Remote reads byte ranges of the layer blob from its registry.
	Remote RangeReader
	// Timeout bounds each fetch from the registry; default 60 s.
	Timeout time.Duration
	// ReadAhead is how many compressed bytes one fetch may cover beyond the
	// chunk asked for (the following chunks of the same file); default 1 MiB.
	ReadAhead int64
	// Logger receives chunk verification failures; default slog.Default().
	Logger *slog.Logger
	// TOCVerified, when set, is called with the TOC JSON once it matches
	// the TOC digest, before it is decoded: a pull stores the TOC while
	// the layer's largest CPU cost runs. It must not block or change js.
	TOCVerified func(js []byte)
}

// Layer is one eStargz layer blob served lazily.
type Layer struct {
	desc ocispec.Descriptor
	// payloadEnd is where the chunks end (the TOC follows).
	payloadEnd int64
	toc        []byte
	r          *estargz.Reader
	sp         *spans
	opts       Options
	dec        estargz.Decompressor // the format's, for chunks
	mem        *chunkLRU
	pmu        sync.Mutex
	pending    map[chunkKey]*pendingChunk // chunks on their way
	// ahead holds a token per prefetch in flight (sequential reads).
	ahead chan struct{}
	// fetched counts the bytes read from the registry.
	fetched atomic.Int64
}

// Open opens a lazy layer: it reads footer and TOC from the cache, else
// fetches them (one or two Range requests), verifies the TOC against
// tocDigest and checks its entries. A pull calls it to fail early on a bad
// layer; a mount calls it to serve one.
func Open(ctx context.Context, desc ocispec.Descriptor, tocDigest digest.Digest, opts Options) (*Layer, error) {
	if err := tocDigest.Validate(); err != nil {
		return nil, fmt.Errorf("layer %s: TOC digest annotation %q: %v: %w", desc.Digest, tocDigest, err, errdefs.ErrInvalidArgument)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.ReadAhead <= 0 {
		opts.ReadAhead = 1 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	sp, err := openSpans(opts.Dir, desc.Size)
	if err != nil {
		return nil, fmt.Errorf("layer %s: chunk cache: %w", desc.Digest, err)
	}
	l := &Layer{desc: desc, sp: sp, opts: opts, mem: newChunkLRU(memBudget), pending: map[chunkKey]*pendingChunk{}, ahead: make(chan struct{}, maxPrefetches)}
	// The decode ahead is a burst of allocation (see openTOC); its huge
	// pages are reserved while the TOC is on its way.
	hugeheap.Prepare()
	if err := l.openTOC(ctx, tocDigest); err != nil {
		sp.close()
		return nil, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	return l, nil
}

func (l *Layer) openTOC(ctx context.Context, want digest.Digest) error {
	size := l.desc.Size
	start := time.Now()
	t, f, ok := l.cachedTail()
	if !ok {
		var err error
		t, f, err = fetchTail(ctx, l.readRemote, size)
		if err != nil {
			return err
		}
	}
	fetched := time.Now()
	// The TOC's decode is a burst of small allocations: under a laxer
	// collector, and on huge pages (the daemon's heap is faulted in 4 KiB
	// pages otherwise, at a cost that was most of a lazy pull's CPU).
	defer gcburst.Begin()()
	defer hugeheap.Begin()()
	js, check, err := tocJSON(t, f, want)
	if err != nil {
		return err
	}
	decompressed := time.Now()
	// The decode runs while the hash ends; TOCVerified hears of the TOC as
	// soon as it is verified, beside the decode.
	verified := make(chan error, 1)
	go func() {
		err := check()
		if err == nil && l.opts.TOCVerified != nil {
			l.opts.TOCVerified(js)
		}
		verified <- err
	}()
	r, err := openTOC(js, f.payloadEnd, size, want)
	// A TOC that is not the pinned one says so, whatever its decode found.
	if verr := <-verified; verr != nil {
		return verr
	}
	if err != nil {
		return err
	}
	decoded := time.Now()
	if !ok {
		// Verified: keep it, so that a restart opens the layer offline.
		if err := l.sp.put(f.tocOff, t.data[f.tocOff-t.off:]); err != nil {
			return fmt.Errorf("chunk cache: %w", err)
		}
	}
	l.dec, l.payloadEnd, l.toc, l.r = f.dec, f.payloadEnd, js, r
	// Where the time of a lazy start goes, step by step (--log-level debug).
	l.opts.Logger.Debug("lazy: TOC opened", "layer", l.desc.Digest, "from_cache", ok, "toc_bytes", size-f.tocOff, "json_bytes", len(js),
		"fetch", fetched.Sub(start), "decompress", decompressed.Sub(fetched), "decode_check_verify", decoded.Sub(decompressed), "cache", time.Since(decoded))
	return nil
}

// cachedTail finds footer and TOC in the chunk cache.
func (l *Layer) cachedTail() (tail, footer, bool) {
	size := l.desc.Size
	n := min(size, maxFooterSize)
	if !l.sp.has(size-n, n) {
		return tail{}, footer{}, false
	}
	last, err := l.sp.read(size-n, n)
	if err != nil {
		return tail{}, footer{}, false
	}
	f, err := parseFooter(last, size)
	if err != nil || !l.sp.has(f.tocOff, size-f.tocOff) {
		return tail{}, footer{}, false
	}
	b, err := l.sp.read(f.tocOff, size-f.tocOff)
	if err != nil {
		return tail{}, footer{}, false
	}
	return tail{off: f.tocOff, data: b}, f, true
}

// readRemote fills p with the bytes at off.
func (l *Layer) readRemote(ctx context.Context, off int64, p []byte) error {
	err := l.opts.Remote(ctx, off, p)
	if err == nil {
		l.fetched.Add(int64(len(p)))
	}
	return err
}

// Close releases the cache files.
func (l *Layer) Close() error { return l.sp.close() }

// TOC returns the verified TOC JSON.
func (l *Layer) TOC() []byte { return l.toc }

// Fetched is the number of bytes this layer read from its registry.
func (l *Layer) Fetched() int64 { return l.fetched.Load() }

// Cached is the number of bytes of the layer blob held in the chunk cache.
func (l *Layer) Cached() int64 { return l.sp.present() }

// Walk lists the layer's entries for the merged tree, each directory
// before the entries inside it, in the merged tree's encoding: ".wh.<name>"
// entries become whiteouts and a ".wh..wh..opq" marker makes its directory
// opaque. The eStargz metadata entries are left out.
func (l *Layer) Walk(ctx context.Context, fn func(*merged.Entry) error) error {
	root, _ := l.r.Lookup("")
	links := map[*estargz.TOCEntry]uint64{}
	type kid struct {
		base string
		e    *estargz.TOCEntry
	}
	// The children of the directories being walked, stacked in one slice
	// (a directory's kids stay valid when a deeper append moves it): one
	// allocation per walk instead of one per directory.
	var stack []kid
	var walk func(dir string, e *estargz.TOCEntry, opaque bool) error
	walk = func(dir string, e *estargz.TOCEntry, opaque bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		top := len(stack)
		e.ForeachChild(func(base string, c *estargz.TOCEntry) bool {
			stack = append(stack, kid{base, c})
			return true
		})
		kids := stack[top:len(stack):len(stack)]
		defer func() { stack = stack[:top] }()
		slices.SortFunc(kids, func(a, b kid) int { return strings.Compare(a.base, b.base) })
		me := entryOf(dir, e, 0)
		me.Opaque = opaque
		if err := fn(&me); err != nil {
			return err
		}
		for _, k := range kids {
			base, c := k.base, k.e
			p := join(dir, base)
			switch {
			case dir == "" && merged.IsEStargzMetadata(p), base == opaqueMarker:
				continue
			case strings.HasPrefix(base, whiteoutPrefix):
				w := merged.Entry{Path: join(dir, base[len(whiteoutPrefix):]), Whiteout: true}
				if err := fn(&w); err != nil {
					return err
				}
				continue
			case c.Type == "dir":
				cOpaque := false
				c.ForeachChild(func(b string, _ *estargz.TOCEntry) bool {
					cOpaque = cOpaque || b == opaqueMarker
					return !cOpaque
				})
				if err := walk(p, c, cOpaque); err != nil {
					return err
				}
				continue
			}
			var link uint64
			if c.NumLink > 1 {
				if link = links[c]; link == 0 {
					link = uint64(len(links) + 1)
					links[c] = link
				}
			}
			en := entryOf(p, c, link)
			if err := fn(&en); err != nil {
				return err
			}
		}
		return nil
	}
	return walk("", root, false)
}

// OCI whiteout names inside a layer tar.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

func entryOf(p string, e *estargz.TOCEntry, link uint64) merged.Entry {
	m := merged.Entry{Path: p, Link: link}
	a := &m.Attr
	a.Mode, a.Uid, a.Gid = uint32(e.Mode)&0o7777, uint32(e.UID), uint32(e.GID)
	switch e.Type {
	case "dir":
		a.Mode |= unix.S_IFDIR
		a.Size = merged.DirSize
	case "reg":
		a.Mode |= unix.S_IFREG
		a.Size = e.Size
	case "symlink":
		a.Mode |= unix.S_IFLNK
		m.Target = e.LinkName
		a.Size = int64(len(e.LinkName))
	case "char":
		a.Mode |= unix.S_IFCHR
		a.Rdev = unix.Mkdev(uint32(e.DevMajor), uint32(e.DevMinor))
	case "block":
		a.Mode |= unix.S_IFBLK
		a.Rdev = unix.Mkdev(uint32(e.DevMajor), uint32(e.DevMinor))
	case "fifo":
		a.Mode |= unix.S_IFIFO
	}
	if t := e.ModTime(); !t.IsZero() {
		a.Mtime = unix.NsecToTimespec(t.UnixNano())
	}
	if len(e.Xattrs) > 0 {
		for k, v := range e.Xattrs {
			m.Xattrs = append(m.Xattrs, merged.Xattr{Name: k, Value: v})
		}
		sort.Slice(m.Xattrs, func(i, j int) bool { return m.Xattrs[i].Name < m.Xattrs[j].Name })
	}
	return m
}

// Open returns a reader of one regular file of the layer: each read
// fetches (or finds in the cache) and verifies the chunks it covers.
func (l *Layer) Open(ctx context.Context, p string) (merged.Content, error) {
	e, ok := l.r.Lookup(p)
	if !ok || e.Type != "reg" {
		return nil, fmt.Errorf("layer %s: no regular file %q: %w", l.desc.Digest, p, errdefs.ErrNotFound)
	}
	return &file{l: l, name: p, size: e.Size}, nil
}

type file struct {
	l    *Layer
	name string
	size int64
	// next is where the previous read ended: a read starting there is
	// sequential, and fetches the chunks after it in the background.
	next atomic.Int64
}

// A sequential reader has the chunks of the next prefetchWindow file bytes
// fetched ahead of it, by up to maxPrefetches requests at once, each
// covering up to prefetchRequest compressed bytes, so that the registry's
// latency and the decompression overlap with the reader. The window stays
// under the LRU's budget, so that what is fetched ahead is still in memory
// when the reader gets there. Requests of several chunks cost the registry
// less than a request per chunk (docker-registry spent 3.5 CPU-s serving a
// 1 GiB file in 4 MiB requests, 2.0 s in 16 MiB ones).
const (
	maxPrefetches   = 3
	prefetchRequest = 8 << 20
	prefetchWindow  = 24 << 20
	memBudget       = 32 << 20
)

func (f *file) Close() error { return nil }

func (f *file) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, errdefs.ErrInvalidArgument)
	}
	seq := off == f.next.Load()
	n := 0
	defer func() {
		f.next.Store(off)
		if seq && n > 0 && off < f.size {
			f.prefetch(off)
		}
	}()
	for n < len(b) && off < f.size {
		ce, ok := f.l.r.ChunkEntryForOffset(f.name, off)
		if !ok {
			return n, fmt.Errorf("layer %s file %q: no chunk at offset %d: %w", f.l.desc.Digest, f.name, off, errdefs.ErrInvalidArgument)
		}
		c, err := f.l.chunk(f.name, ce, f.l.opts.ReadAhead)
		if err != nil {
			return n, err
		}
		k := copy(b[n:], c.b[off-ce.ChunkOffset:])
		c.release()
		n += k
		off += int64(k)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// prefetch starts background fetches of the chunks in the window after
// off that are neither in memory, nor cached, nor on their way, one
// request per prefetchRequest compressed bytes, while request slots are
// free.
func (f *file) prefetch(off int64) {
	l := f.l
	covered := int64(-1) // compressed offset up to which a prefetch covers
	for at := off; at < min(f.size, off+prefetchWindow); {
		ce, ok := l.r.ChunkEntryForOffset(f.name, at)
		if !ok || ce.ChunkSize <= 0 {
			return
		}
		at = ce.ChunkOffset + ce.ChunkSize
		if ce.Offset < covered || l.loaded(ce) {
			continue
		}
		select {
		case l.ahead <- struct{}{}:
		default:
			return // enough in flight
		}
		covered = ce.Offset + prefetchRequest
		go func() {
			defer func() { <-l.ahead }()
			if c, err := l.chunk(f.name, ce, prefetchRequest); err == nil {
				c.release()
			} // a failure shows when the reader gets there
		}()
	}
}

// loaded: the chunk is in memory, cached on disk, or on its way.
func (l *Layer) loaded(ce *estargz.TOCEntry) bool {
	key := chunkKey{ce.Offset, ce.InnerOffset}
	if l.mem.has(key) || l.sp.has(ce.Offset, l.spanEnd(ce)-ce.Offset) {
		return true
	}
	l.pmu.Lock()
	defer l.pmu.Unlock()
	_, ok := l.pending[key]
	return ok
}

type chunkKey struct{ off, inner int64 }

// chunk returns one verified, decompressed chunk with a reference for the
// caller to release: from memory, else from the cache on disk, else from
// the registry, with the following chunks of the same file that are not
// loaded, up to span compressed bytes in one request. Readers of a chunk
// on its way wait for it; a fetch is bounded by Timeout, not by a reader.
func (l *Layer) chunk(name string, ce *estargz.TOCEntry, span int64) (*chunkData, error) {
	key := chunkKey{ce.Offset, ce.InnerOffset}
	for {
		if c, ok := l.mem.get(key); ok {
			return c, nil
		}
		l.pmu.Lock()
		if p, ok := l.pending[key]; ok {
			l.pmu.Unlock()
			<-p.done
			if p.err != nil {
				return nil, p.err
			}
			if p.c != nil && p.c.acquire() {
				return p.c, nil
			}
			continue // evicted already, or not loaded after all: look again
		}
		plan := l.plan(name, ce, span)
		ps := make([]*pendingChunk, len(plan))
		for i, c := range plan {
			ps[i] = &pendingChunk{done: make(chan struct{})}
			l.pending[chunkKey{c.Offset, c.InnerOffset}] = ps[i]
		}
		l.pmu.Unlock()
		return l.load(name, plan, ps)
	}
}

// plan is ce and, when ce is not cached on disk, the chunks after it in
// the same file that are contiguous and not loaded, while the request is
// under span compressed bytes. l.pmu is held.
func (l *Layer) plan(name string, ce *estargz.TOCEntry, span int64) []*estargz.TOCEntry {
	plan := []*estargz.TOCEntry{ce}
	end := l.spanEnd(ce)
	if l.sp.has(ce.Offset, end-ce.Offset) {
		return plan
	}
	for next := ce.ChunkOffset + ce.ChunkSize; end-ce.Offset < span; {
		c, ok := l.r.ChunkEntryForOffset(name, next)
		if !ok || c.Offset != end || c.InnerOffset != 0 {
			break
		}
		key := chunkKey{c.Offset, c.InnerOffset}
		if _, ok := l.pending[key]; ok || l.mem.has(key) || l.sp.has(c.Offset, l.spanEnd(c)-c.Offset) {
			break
		}
		plan = append(plan, c)
		end = l.spanEnd(c)
		next = c.ChunkOffset + c.ChunkSize
	}
	return plan
}

// load loads the chunks of plan, registered as ps, and returns the first
// with the caller's reference. Every pending chunk is settled on return.
func (l *Layer) load(name string, plan []*estargz.TOCEntry, ps []*pendingChunk) (first *chunkData, err error) {
	settled := 0
	settle := func(c *chunkData, err error) {
		ce := plan[settled]
		if c != nil {
			l.mem.put(chunkKey{ce.Offset, ce.InnerOffset}, c)
		}
		p := ps[settled]
		p.c, p.err = c, err
		l.pmu.Lock()
		delete(l.pending, chunkKey{ce.Offset, ce.InnerOffset})
		l.pmu.Unlock()
		close(p.done)
		settled++
	}
	defer func() {
		for settled < len(ps) {
			settle(nil, nil) // not loaded: their readers look again
		}
	}()

	ce := plan[0]
	sp := span{ce.Offset, l.spanEnd(ce) - ce.Offset}
	if len(plan) == 1 && l.sp.has(sp.Off, sp.Len) {
		raw := bufs.get(int(sp.Len))
		err := l.sp.readInto(sp.Off, raw)
		var c *chunkData
		if err == nil {
			c, err = l.decode(ce, raw)
		}
		bufs.put(raw)
		if err == nil {
			settle(c, nil)
			return c, nil
		}
		l.opts.Logger.Warn("lazy: cached chunk fails verification, fetching it again", "layer", l.desc.Digest, "file", name, "offset", ce.ChunkOffset, "err", err)
	}

	end := l.spanEnd(plan[len(plan)-1])
	raw := bufs.get(int(end - ce.Offset))
	defer bufs.put(raw)
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.Timeout)
	defer cancel()
	if err := l.readRemote(ctx, ce.Offset, raw); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer from the registry within %s: %w", l.opts.Timeout, errdefs.ErrUnavailable)
		}
		err = fmt.Errorf("layer %s file %q offset %d: %w", l.desc.Digest, name, ce.ChunkOffset, err)
		settle(nil, err)
		return nil, err
	}
	for i, c := range plan {
		b := raw[c.Offset-ce.Offset : l.spanEnd(c)-ce.Offset]
		d, err := l.decode(c, b)
		if err != nil {
			l.opts.Logger.Error("lazy: chunk from the registry fails verification", "layer", l.desc.Digest, "file", name, "offset", c.ChunkOffset, "err", err)
			if i == 0 {
				err = fmt.Errorf("layer %s file %q offset %d: %w", l.desc.Digest, name, c.ChunkOffset, err)
				settle(nil, err)
				return nil, err
			}
			break
		}
		if err := l.sp.put(c.Offset, b); err != nil {
			l.opts.Logger.Warn("lazy: cannot cache chunk", "layer", l.desc.Digest, "err", err)
		}
		settle(d, nil)
		if i == 0 {
			first = d
		} else {
			d.release()
		}
	}
	return first, nil
}

// spanEnd is where the compressed bytes of a chunk end: at the next
// chunk, or where the chunks end for the last one.
func (l *Layer) spanEnd(ce *estargz.TOCEntry) int64 { return min(ce.NextOffset(), l.payloadEnd) }

// decode decompresses one chunk from its compressed span into a pooled
// buffer and verifies it against the TOC.
func (l *Layer) decode(ce *estargz.TOCEntry, raw []byte) (*chunkData, error) {
	zr, err := l.dec.Reader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("chunk does not decompress: %v: %w", err, errdefs.ErrDigestMismatch)
	}
	defer zr.Close()
	if ce.InnerOffset > 0 {
		if _, err := io.CopyN(io.Discard, zr, ce.InnerOffset); err != nil {
			return nil, fmt.Errorf("chunk: %v: %w", err, errdefs.ErrDigestMismatch)
		}
	}
	c := newChunkData(bufs.get(int(ce.ChunkSize)))
	if _, err := io.ReadFull(zr, c.b); err != nil {
		c.release()
		return nil, fmt.Errorf("chunk: %v: %w", err, errdefs.ErrDigestMismatch)
	}
	// The chunk's own digest in the verified TOC, parsed when first used:
	// parsing every digest of a TOC up front was a quarter of opening it.
	want, err := digest.Parse(ce.ChunkDigest)
	if err != nil {
		c.release()
		return nil, fmt.Errorf("chunk has no usable digest in the TOC (%q): %w", ce.ChunkDigest, errdefs.ErrDigestMismatch)
	}
	if want.Algorithm().FromBytes(c.b) != want {
		c.release()
		return nil, fmt.Errorf("chunk does not match its TOC digest: %w", errdefs.ErrDigestMismatch)
	}
	return c, nil
}

// completeRequest bounds one request of a completion.
const completeRequest = 4 << 20

// Complete fetches every byte of the layer blob that is not cached yet, in
// blob order, so that the files an eStargz builder put before the prefetch
// landmark arrive first. These bytes are not verified one by one: reads
// still verify each chunk they use, and Blob's reader is checked as a whole
// against the layer digest before anything else uses it.
func (l *Layer) Complete(ctx context.Context) error {
	for _, m := range l.sp.missing() {
		for off := m.Off; off < m.end(); off += completeRequest {
			n := min(completeRequest, m.end()-off)
			fctx, cancel := context.WithTimeout(ctx, l.opts.Timeout)
			b := bufs.get(int(n))
			err := l.readRemote(fctx, off, b)
			cancel()
			if err == nil {
				if err = l.sp.put(off, b); err != nil {
					err = fmt.Errorf("layer %s: chunk cache: %w", l.desc.Digest, err)
				}
			} else {
				err = fmt.Errorf("layer %s: complete at %d: %w", l.desc.Digest, off, err)
			}
			bufs.put(b)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// Blob reads the whole cached blob; it is complete after Complete.
func (l *Layer) Blob() io.Reader { return io.NewSectionReader(l.sp.data, 0, l.desc.Size) }

// Discard forgets every cached range (after a completed blob failed its
// digest): the cache starts over, and the verified TOC stays in memory.
func (l *Layer) Discard() error {
	return l.sp.reset()
}
