package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/fetch"
	"github.com/casfs/casfs/layers"
	"github.com/casfs/casfs/oci"
)

// pullUnpacker unpacks the layers of a pull while they download.
//
// It wraps the pull's handler (wrap): once a manifest is local, its layers
// are planned and dispatched while its config is fetched beside them; with
// the config local, a goroutine starts that unpacks them side by side
// (unpackAll), each committed once the layer below is. A layer
// is available either as its download streams in (fetch.WithTee: the bytes go
// through the decompressor into the snapshot while they are written to the
// blob store, so a big layer is unpacked in the time it takes to download)
// or, failing that, as the committed blob (its handler returned).
//
// A layer's stream is only taken while its goroutine waits for it; until
// then the download waits too (a pipe), which bounds memory and lets the
// lowest layers, fetched first, never wait on higher ones. A stream that
// breaks (a download that had to start over) is dropped and the layer is
// unpacked from its blob instead. Whichever way, Unpack checks the diff ID
// of what it read before it commits the snapshot.
type pullUnpacker struct {
	s        *Local
	opts     PullOptions
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	jobs     map[digest.Digest][]*layerJob
	err      error
	finished bool
}

type layerJob struct {
	desc          ocispec.Descriptor
	chain, parent string
	diffID        digest.Digest

	fetched     chan struct{} // closed when the blob is in the store
	fetchedOnce sync.Once
	streamed    chan struct{} // closed when stream is set
	stream      *streamPipe
	taken       bool // no stream may be offered any more
}

func newPullUnpacker(ctx context.Context, s *Local, opts PullOptions) *pullUnpacker {
	ctx, cancel := context.WithCancel(ctx)
	return &pullUnpacker{s: s, opts: opts, ctx: ctx, cancel: cancel, jobs: map[digest.Digest][]*layerJob{}}
}

// wrap is the unpacker as a handler around h, a pull's handler: a
// manifest that this machine can run has its layers planned before they
// are dispatched, and its config fetched beside them, after which an
// unpacking goroutine starts; each planned layer's download is offered to
// its job as a stream, and the job is told once the blob is present.
func (u *pullUnpacker) wrap(h oci.Handler) oci.Handler {
	return oci.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if u.planned(desc.Digest) {
			if w := u.tee(desc); w != nil {
				ctx = fetch.WithTee(ctx, w)
			}
			children, err := h.Handle(ctx, desc)
			if err == nil {
				u.blobDone(desc)
			}
			return children, err
		}
		children, err := h.Handle(ctx, desc)
		config, layers, ok := fetch.ManifestParts(children)
		if err != nil || !ok || !u.s.unpackable(desc, u.opts) {
			return children, err
		}
		jobs, err := u.plan(desc, layers)
		if err != nil {
			return nil, err
		}
		// The config downloads beside the layers: their downloads and
		// streams need only the plan, their unpacking the config's diff
		// IDs. Fetched first, alone, it delayed every layer by a round
		// trip to the registry and the plan's reads (20-50 ms). u.ctx,
		// not ctx: the dispatcher ends ctx once this handler returns.
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			if _, err := h.Handle(u.ctx, config); err != nil {
				u.fail(err)
				return
			}
			if err := u.start(u.ctx, desc, jobs); err != nil {
				u.fail(err)
			}
		}()
		return layers, nil
	})
}

// plan makes the jobs of manifest md's layers, so that their downloads are
// offered to them as streams; start completes them once the config is local.
func (u *pullUnpacker) plan(md ocispec.Descriptor, layers []ocispec.Descriptor) ([]*layerJob, error) {
	jobs := make([]*layerJob, len(layers))
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.finished {
		return nil, fmt.Errorf("unpack manifest %s: the pull is ending: %w", md.Digest, context.Canceled)
	}
	for i, l := range layers {
		jobs[i] = &layerJob{desc: l, fetched: make(chan struct{}), streamed: make(chan struct{})}
		u.jobs[l.Digest] = append(u.jobs[l.Digest], jobs[i])
	}
	return jobs, nil
}

func (u *pullUnpacker) planned(d digest.Digest) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.jobs[d]) > 0
}

// fail records the first error, stops offering streams and cancels the
// pull. Streams offered but not being read are closed: a download blocked
// writing into one would not notice the cancellation.
func (u *pullUnpacker) fail(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.closeStreamsLocked()
	u.mu.Unlock()
	u.cancel()
}

func (u *pullUnpacker) closeStreamsLocked() {
	u.finished = true
	for _, js := range u.jobs {
		for _, j := range js {
			j.taken = true
			if j.stream != nil {
				j.stream.CloseRead(errStreamNotNeeded)
				j.stream = nil
			}
		}
	}
}

// start completes the jobs plan made for manifest md, whose config is now
// local, with their snapshots' chain IDs and diff IDs, and starts
// unpacking its layers.
func (u *pullUnpacker) start(ctx context.Context, md ocispec.Descriptor, jobs []*layerJob) error {
	sn, err := u.s.Snapshotter()
	if err != nil {
		return err
	}
	il, err := u.s.imageLayers(ctx, md)
	if err != nil {
		return fmt.Errorf("unpack manifest %s: %w", md.Digest, err)
	}
	if len(il.Layers) != len(jobs) {
		return fmt.Errorf("unpack manifest %s: %d layers, %d planned: %w", md.Digest, len(il.Layers), len(jobs), errdefs.ErrFailedPrecondition)
	}
	unpacked := make([]bool, len(jobs))
	for i, l := range il.Layers {
		if l.Digest != jobs[i].desc.Digest {
			return fmt.Errorf("unpack manifest %s: layer %d is %s, planned %s: %w", md.Digest, i, l.Digest, jobs[i].desc.Digest, errdefs.ErrFailedPrecondition)
		}
		_, err := sn.Stat(ctx, il.ChainIDs[i].String())
		unpacked[i] = err == nil
	}
	u.mu.Lock()
	if u.finished {
		u.mu.Unlock()
		return fmt.Errorf("unpack manifest %s: the pull is ending: %w", md.Digest, context.Canceled)
	}
	for i, j := range jobs {
		j.chain, j.diffID = il.ChainIDs[i].String(), il.DiffIDs[i]
		if i > 0 {
			j.parent = jobs[i-1].chain
		}
		if unpacked[i] {
			j.taken = true // unpacked before: no stream wanted (one taken already is closed unread)
		}
	}
	u.wg.Add(1)
	u.mu.Unlock()
	go func() {
		defer u.wg.Done()
		if err := u.unpackAll(jobs); err != nil {
			u.fail(err)
		}
	}()
	return nil
}

func (u *pullUnpacker) blobDone(d ocispec.Descriptor) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, j := range u.jobs[d.Digest] {
		j.fetchedOnce.Do(func() { close(j.fetched) })
	}
}

// tee offers a layer's download stream to the first job of that digest that
// has not started yet.
func (u *pullUnpacker) tee(d ocispec.Descriptor) fetch.TeeWriter {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.finished {
		return nil
	}
	for _, j := range u.jobs[d.Digest] {
		if !j.taken {
			j.taken = true
			sp := newStreamPipe(streamBuffer)
			j.stream = sp
			close(j.streamed)
			return sp
		}
	}
	return nil
}

// take ends the offer of a stream to j and returns the one it got, if any.
func (u *pullUnpacker) take(j *layerJob) *streamPipe {
	u.mu.Lock()
	defer u.mu.Unlock()
	j.taken = true
	r := j.stream
	j.stream = nil
	return r
}

var errStreamNotNeeded = errors.New("layer stream not needed")

// unpackAll unpacks the layers side by side, as many at a time as Go
// runs threads (GOMAXPROCS): each starts once its bytes are at hand,
// writes its files while the layers below are still being unpacked, and
// waits for the one below only when it must look below and before it
// commits (layers.Snapshotter.UnpackAbove). A layer waiting for its
// parent gives its turn to another. A failure cancels the layers above the
// one that failed once those below it have finished.
func (u *pullUnpacker) unpackAll(jobs []*layerJob) error {
	sn, err := u.s.Snapshotter()
	if err != nil {
		return err
	}
	ctx := sn.Limits.ImageContext(u.ctx) // one budget for the image's layers
	turns := newTurns(runtime.GOMAXPROCS(0))
	done := make([]chan struct{}, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		done[i] = make(chan struct{})
		var below func(context.Context) error
		if i > 0 {
			below = func(ctx context.Context) error {
				select {
				case <-done[i-1]:
				case <-ctx.Done():
					return ctx.Err()
				}
				if errs[i-1] != nil {
					return fmt.Errorf("layer %s failed: %w", jobs[i-1].desc.Digest, errs[i-1])
				}
				return nil
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[i])
			if errs[i] = u.unpackLayer(ctx, sn, j, turns, below); errs[i] != nil {
				// The layers below are unaffected: let them finish, so
				// a failed pull keeps every whole snapshot below the
				// layer that failed (a retry resumes from there) whichever
				// layer got furthest first; then stop the rest.
				for k := range i {
					<-done[k]
				}
				u.fail(errs[i])
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// unpackLayer makes j's snapshot from its download stream or, failing
// that, its blob, taking a turn while it works; below waits for the
// snapshot below (nil for the base layer).
func (u *pullUnpacker) unpackLayer(ctx context.Context, sn *layers.Snapshotter, j *layerJob, turns *turns, below func(context.Context) error) error {
	select {
	case <-j.streamed:
	case <-j.fetched:
	case <-u.ctx.Done():
		return u.ctx.Err()
	}
	stream := u.take(j)
	if _, err := sn.Stat(u.ctx, j.chain); err == nil {
		if stream != nil {
			stream.CloseRead(errStreamNotNeeded)
		}
		return nil
	}
	turn := turns.take()
	defer turn.give()
	if err := turn.wait(u.ctx); err != nil {
		if stream != nil {
			stream.CloseRead(errStreamNotNeeded)
		}
		return err
	}
	if below != nil {
		below = turn.aside(below)
	}
	u.progress(j, "unpacking", 0)
	if stream != nil {
		sr := &streamReader{r: stream}
		_, err := sn.UnpackAbove(ctx, j.chain, j.parent, below, sr, j.desc.MediaType, j.diffID)
		// The rest of the stream (after the compressed data's end) is
		// not needed; closing lets the download go on unhindered.
		stream.CloseRead(errStreamNotNeeded)
		if err == nil {
			slog.Debug("layer unpacked from its download stream", "layer", j.desc.Digest, "chain", j.chain)
			u.progress(j, "unpacked", j.desc.Size)
			return nil
		}
		if u.ctx.Err() != nil {
			return fmt.Errorf("unpack layer %s: %w", j.desc.Digest, err)
		}
		// Whether the stream broke (sr.err) or what it carried was wrong,
		// the verified blob decides: bytes that fail their digest fail the
		// pull with that reason (the fetch's error wins), and a verified
		// blob is unpacked again, failing on its own if the layer is bad.
		slog.Debug("layer stream failed, unpacking from the blob once it is verified", "layer", j.desc.Digest, "stream_broke", sr.err != nil, "err", err)
	}
	turn.give() // while the download finishes
	select {
	case <-j.fetched:
	case <-u.ctx.Done():
		return u.ctx.Err()
	}
	if err := turn.wait(u.ctx); err != nil {
		return err
	}
	if err := u.s.unpackLayerBlob(ctx, sn, j.chain, j.parent, below, j.desc, j.diffID); err != nil {
		return err
	}
	slog.Debug("layer unpacked from its blob", "layer", j.desc.Digest, "chain", j.chain)
	u.progress(j, "unpacked", j.desc.Size)
	return nil
}

// turns bounds how many layers unpack at once.
type turns struct{ ch chan struct{} }

func newTurns(n int) *turns { return &turns{ch: make(chan struct{}, max(n, 1))} }

// take returns one goroutine's handle on a turn, not yet held.
func (t *turns) take() *turn { return &turn{ch: t.ch} }

// turn is one goroutine's turn: held or not.
type turn struct {
	ch   chan struct{}
	held bool
}

func (t *turn) wait(ctx context.Context) error {
	if t.held {
		return nil
	}
	select {
	case t.ch <- struct{}{}:
		t.held = true
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *turn) give() {
	if t.held {
		<-t.ch
		t.held = false
	}
}

// aside wraps a wait so that the turn is given to another while it waits.
func (t *turn) aside(wait func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		t.give()
		if err := wait(ctx); err != nil {
			return err
		}
		return t.wait(ctx)
	}
}

func (u *pullUnpacker) progress(j *layerJob, status string, done int64) {
	if u.opts.Progress != nil {
		u.opts.Progress(ProgressEvent{Digest: j.desc.Digest, MediaType: j.desc.MediaType, Total: j.desc.Size, Done: done, Status: status})
	}
}

// wait waits for the unpackers after the fetch ended (fetchErr is its
// error) and returns the error that explains the pull's failure best.
func (u *pullUnpacker) wait(fetchErr error) error {
	if fetchErr != nil {
		u.cancel()
	}
	u.wg.Wait()
	u.mu.Lock()
	u.closeStreamsLocked() // none may hold a download any more
	err := u.err
	u.mu.Unlock()
	u.cancel()
	if err != nil && (fetchErr == nil || errors.Is(fetchErr, context.Canceled)) {
		return err
	}
	return fetchErr
}

// streamReader remembers whether the download stream itself failed (the
// download started over or broke off), as opposed to what was read from it
// being wrong: only the former is worth another try from the blob.
type streamReader struct {
	r   io.Reader
	err error
}

func (s *streamReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// streamBuffer is how many chunks of a download (32 KiB each) may wait
// for the unpacker: enough that download and
// decompression run side by side rather than in lock step, as they would
// through an unbuffered io.Pipe.
const streamBuffer = 256

// streamPipe is a bounded, buffered pipe: fetch writes a layer's bytes in,
// the unpacker reads them out. Either side may end it with an error.
type streamPipe struct {
	ch      chan []byte
	wclosed chan struct{}
	rclosed chan struct{}
	wonce   sync.Once
	ronce   sync.Once
	werr    error
	rerr    error
	chunk   []byte // the chunk being read, whole
	cur     []byte // what is left of it
}

func newStreamPipe(n int) *streamPipe {
	return &streamPipe{ch: make(chan []byte, n), wclosed: make(chan struct{}), rclosed: make(chan struct{})}
}

// Write blocks while the buffer is full, until the reader takes a chunk or
// either side closes the pipe: a writer stopped by its own context (fetch
// closes the copy when its download is cancelled) gets its error back.
// Bytes go in as recycled chunks of at most streamChunk, whatever the
// size of b (fetch hands on each socket read, up to a MiB), so the buffer
// stays bounded by streamBuffer chunks.
func (p *streamPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		m := min(len(b), streamChunk)
		if err := p.writeChunk(b[:m]); err != nil {
			return n, err
		}
		b, n = b[m:], n+m
	}
	return n, nil
}

func (p *streamPipe) writeChunk(b []byte) error {
	c := append(getChunk(), b...) // the caller reuses b
	select {
	case <-p.rclosed:
		putChunk(c)
		return p.rerr
	case <-p.wclosed:
		putChunk(c)
		return fmt.Errorf("write to a closed layer stream: %w", errStreamClosed)
	default:
	}
	select {
	case p.ch <- c:
		return nil
	case <-p.rclosed:
		putChunk(c)
		return p.rerr
	case <-p.wclosed:
		putChunk(c)
		return fmt.Errorf("write to a closed layer stream: %w", errStreamClosed)
	}
}

var errStreamClosed = errors.New("stream closed")

// CloseWithError ends the writing side: nil means the reader gets EOF once
// it has read everything.
func (p *streamPipe) CloseWithError(err error) error {
	p.wonce.Do(func() {
		p.werr = err
		close(p.wclosed)
	})
	return nil
}

// CloseRead ends the reading side; writes fail with err from then on.
func (p *streamPipe) CloseRead(err error) {
	p.ronce.Do(func() {
		p.rerr = err
		close(p.rclosed)
	})
}

func (p *streamPipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		select {
		case c := <-p.ch:
			p.chunk, p.cur = c, c
			continue
		case <-p.rclosed:
			return 0, p.rerr
		case <-p.wclosed:
		}
		// Written before the close: still to be read.
		select {
		case c := <-p.ch:
			p.chunk, p.cur = c, c
			continue
		default:
		}
		if p.werr != nil {
			return 0, p.werr
		}
		return 0, io.EOF
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	if len(p.cur) == 0 {
		putChunk(p.chunk)
		p.chunk, p.cur = nil, nil
	}
	return n, nil
}

// streamChunk is the size of the buffers a streamPipe recycles. Recycling
// them spares a pull an allocation, and the page faults of fresh memory,
// for every 32 KiB of its layers.
const streamChunk = 32 << 10

var streamChunks = sync.Pool{New: func() any { return new([]byte) }}

// getChunk returns an empty buffer of streamChunk bytes.
func getChunk() []byte {
	bp := streamChunks.Get().(*[]byte)
	if cap(*bp) < streamChunk {
		*bp = make([]byte, 0, streamChunk)
	}
	return (*bp)[:0]
}

// putChunk recycles a buffer that getChunk returned, once read.
func putChunk(b []byte) {
	if cap(b) != streamChunk {
		return
	}
	b = b[:0:streamChunk]
	streamChunks.Put(&b)
}
