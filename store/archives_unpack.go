package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/layers"
)

// maxWatchedDoc bounds the members an import keeps in memory to learn its
// images' manifests and configs while it reads the archive.
const maxWatchedDoc = 1 << 20

// importUnpacker unpacks an archive's layers while the archive is read, as
// a pull unpacks while it downloads. It learns manifests and configs from
// the members as they pass; a layer whose image is known and whose lower
// layers are unpacked (or can be, from staged members) is unpacked from the
// member as it is read, else from its staged ingest as soon as that is
// possible. Nothing here decides the import: whatever it did not make (the
// archive's order did not allow it, or it failed), the import unpacks
// afterwards from the verified blobs, and a snapshot made here from an
// archive that is then refused is garbage under the import's lease.
type importUnpacker struct {
	s      *Local
	sn     *layers.Snapshotter
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	wake      *sync.Cond
	closed    bool
	manifests map[digest.Digest]ocispec.Manifest
	configs   map[digest.Digest]ocispec.Image
	sources   map[digest.Digest]layerSource
	started   map[string]bool // chain IDs taken by a job
	unpacked  map[string]*unpackDone
	failed    map[string]bool // chain IDs whose unpack failed from a staged source
	budgets   map[digest.Digest]context.Context
}

// layerSource is where a layer's compressed bytes can be read: the member
// being read now (once), or a staged ingest or stored blob.
type layerSource struct {
	stream *io.PipeReader
	open   func() (io.ReadCloser, error)
}

type unpackJob struct {
	manifest      digest.Digest
	chain, parent string
	layer         ocispec.Descriptor
	diffID        digest.Digest
	src           layerSource
	done, below   *unpackDone // below: nil for a base layer
}

// unpackDone tells the job of the layer above how a job ended.
type unpackDone struct {
	ch  chan struct{}
	err error // set before ch closes
}

// wait is the job above's wait for its parent (layers.Snapshotter.UnpackAbove).
func (d *unpackDone) wait(ctx context.Context) error {
	select {
	case <-d.ch:
		return d.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newImportUnpacker starts the unpacker's worker; ctx carries the import's
// lease. finish or abort ends it.
func newImportUnpacker(ctx context.Context, s *Local) (*importUnpacker, error) {
	sn, err := s.Snapshotter()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	u := &importUnpacker{
		s: s, sn: sn, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		manifests: map[digest.Digest]ocispec.Manifest{}, configs: map[digest.Digest]ocispec.Image{},
		sources: map[digest.Digest]layerSource{}, started: map[string]bool{}, failed: map[string]bool{},
		unpacked: map[string]*unpackDone{}, budgets: map[digest.Digest]context.Context{},
	}
	u.wake = sync.NewCond(&u.mu)
	go u.work()
	return u, nil
}

// imageContext is the context an image's layers unpack under: the
// import's (its lease) with one unpack budget per manifest, shared by the
// worker and the import's last pass. Without an unpacker it is ctx.
func (u *importUnpacker) imageContext(ctx context.Context, md digest.Digest) context.Context {
	if u == nil {
		return ctx
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.budgetLocked(md)
}

func (u *importUnpacker) budgetLocked(md digest.Digest) context.Context {
	if c, ok := u.budgets[md]; ok {
		return c
	}
	c := u.sn.Limits.ImageContext(u.ctx)
	u.budgets[md] = c
	return c
}

// work runs jobs on as many goroutines as Go runs threads: a layer's job
// starts once the layers below it have started, writes its files while
// they finish, and commits after them.
func (u *importUnpacker) work() {
	defer close(u.done)
	var wg sync.WaitGroup
	for range max(runtime.GOMAXPROCS(0), 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.worker()
		}()
	}
	wg.Wait()
}

func (u *importUnpacker) worker() {
	for {
		j, ok := u.next()
		if !ok {
			return
		}
		err := u.run(j)
		u.mu.Lock()
		if err != nil {
			slog.Debug("import: unpacking while reading did not make a layer; the import unpacks it from its blob", "layer", j.layer.Digest, "err", err)
			delete(u.started, j.chain)
			if j.src.stream == nil {
				u.failed[j.chain] = true
			}
			u.dropStreamsLocked() // they may wait on what just failed
		}
		j.done.err = err
		close(j.done.ch)
		u.wake.Broadcast()
		u.mu.Unlock()
	}
}

func (u *importUnpacker) run(j unpackJob) error {
	var r io.Reader
	if j.src.stream != nil {
		defer j.src.stream.CloseWithError(errStreamDone) // never leave the member's reader blocked
		r = j.src.stream
	} else {
		rc, err := j.src.open()
		if err != nil {
			return err
		}
		defer rc.Close()
		r = rc
	}
	ctx := u.imageContext(u.ctx, j.manifest)
	if u.ctx.Err() != nil {
		return u.ctx.Err()
	}
	var below func(context.Context) error
	if j.below != nil {
		below = j.below.wait
	}
	_, err := u.sn.UnpackAbove(ctx, j.chain, j.parent, below, r, j.layer.MediaType, j.diffID)
	return err
}

var errStreamDone = errors.New("the unpacker has stopped reading this member")

// next waits for a job, or for the end of the archive with none left.
func (u *importUnpacker) next() (unpackJob, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for {
		if u.ctx.Err() != nil {
			return unpackJob{}, false
		}
		if j, ok := u.runnableLocked(); ok {
			return j, true
		}
		if u.closed {
			return unpackJob{}, false
		}
		u.wake.Wait()
	}
}

// hostImage returns the chain IDs of manifest m when its config is known
// and runs on this machine.
func (u *importUnpacker) hostImage(m ocispec.Manifest) ([]digest.Digest, []digest.Digest, bool) {
	cfg, ok := u.configs[m.Config.Digest]
	if !ok || len(cfg.RootFS.DiffIDs) != len(m.Layers) || len(m.Layers) == 0 {
		return nil, nil, false
	}
	if !u.s.host.Match(&ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}) {
		return nil, nil, false
	}
	return cfg.RootFS.DiffIDs, layers.ChainIDs(cfg.RootFS.DiffIDs), true
}

// runnableLocked finds the lowest layer not yet started of a known image
// whose bytes are at hand and whose lower layers are started (not
// necessarily done: the job waits for them where it must).
func (u *importUnpacker) runnableLocked() (unpackJob, bool) {
	for _, md := range sortedKeys(u.manifests) {
		m := u.manifests[md]
		diffIDs, chains, ok := u.hostImage(m)
		if !ok {
			continue
		}
		for i, l := range m.Layers {
			key := chains[i].String()
			if u.started[key] {
				continue
			}
			src, ok := u.sources[l.Digest]
			if !ok || u.failed[key] {
				break
			}
			if src.stream != nil {
				delete(u.sources, l.Digest) // a member is read once
			}
			u.started[key] = true
			j := unpackJob{manifest: md, chain: key, layer: l, diffID: diffIDs[i], src: src, done: &unpackDone{ch: make(chan struct{})}}
			if i > 0 {
				j.parent = chains[i-1].String()
				j.below = u.unpacked[j.parent] // started, so there
			}
			u.unpacked[key] = j.done
			return j, true
		}
	}
	return unpackJob{}, false
}

// wantedLocked says whether the worker will reach layer d without reading
// further in the archive: some known image has it as a layer whose lower
// layers are all started or staged.
func (u *importUnpacker) wantedLocked(d digest.Digest) bool {
	for _, m := range u.manifests {
		_, chains, ok := u.hostImage(m)
		if !ok {
			continue
		}
		for i, l := range m.Layers {
			key := chains[i].String()
			if l.Digest == d {
				if !u.started[key] && !u.failed[key] {
					return true
				}
				break
			}
			if _, staged := u.sources[l.Digest]; !u.started[key] && (!staged || u.failed[key]) {
				break
			}
		}
	}
	return false
}

// dropStreamsLocked ends the streams no job has taken: their member goes
// on to its ingest, and the layer to the unpacks from staged bytes.
func (u *importUnpacker) dropStreamsLocked() {
	for d, src := range u.sources {
		if src.stream != nil {
			src.stream.CloseWithError(errStreamDone)
			delete(u.sources, d)
		}
	}
}

// memberWatch sees one member's bytes as they are read.
type memberWatch struct {
	expected digest.Digest
	pw       *io.PipeWriter // nil: not streamed
	dead     bool           // the unpacker stopped reading
	doc      *bytes.Buffer  // nil: too big to be a document
}

// Write never fails: the member is staged whatever the unpacker does.
func (w *memberWatch) Write(p []byte) (int, error) {
	if w.doc != nil {
		if w.doc.Len()+len(p) > maxWatchedDoc {
			w.doc = nil
		} else {
			w.doc.Write(p)
		}
	}
	if w.pw != nil && !w.dead {
		if _, err := w.pw.Write(p); err != nil {
			w.dead = true
		}
	}
	return len(p), nil
}

// watch is called before a member is read; the returned writer (nil
// without an unpacker) gets its bytes.
func (u *importUnpacker) watch(expected digest.Digest, size int64) *memberWatch {
	if u == nil {
		return nil
	}
	w := &memberWatch{expected: expected}
	if size <= maxWatchedDoc {
		w.doc = new(bytes.Buffer)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if expected != "" && !u.closed && u.wantedLocked(expected) {
		pr, pw := io.Pipe()
		w.pw = pw
		u.sources[expected] = layerSource{stream: pr}
		u.wake.Broadcast()
	}
	return w
}

// staged is called once the member is read: err is how staging it ended;
// open reads the staged (or stored) bytes of d.
func (u *importUnpacker) staged(w *memberWatch, d digest.Digest, open func() (io.ReadCloser, error), err error) {
	if u == nil || w == nil {
		return
	}
	if w.pw != nil {
		if err != nil {
			w.pw.CloseWithError(err)
		} else {
			w.pw.Close()
		}
	}
	if err != nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if w.doc != nil {
		u.learnLocked(d, w.doc.Bytes())
	}
	if src := u.sources[d]; src.stream != nil {
		src.stream.CloseWithError(errStreamDone) // no job took it
	}
	u.sources[d] = layerSource{open: open}
	u.wake.Broadcast()
}

// learnLocked keeps a member that is an image manifest or config.
func (u *importUnpacker) learnLocked(d digest.Digest, b []byte) {
	if len(bytes.TrimSpace(b)) == 0 || bytes.TrimSpace(b)[0] != '{' {
		return
	}
	var probe struct {
		Config *ocispec.Descriptor  `json:"config"`
		Layers []ocispec.Descriptor `json:"layers"`
		RootFS *ocispec.RootFS      `json:"rootfs"`
	}
	if json.Unmarshal(b, &probe) != nil {
		return
	}
	switch {
	case probe.Config != nil && len(probe.Layers) > 0:
		var m ocispec.Manifest
		if json.Unmarshal(b, &m) == nil {
			u.manifests[d] = m
		}
	case probe.RootFS != nil && probe.RootFS.Type == "layers":
		var c ocispec.Image
		if json.Unmarshal(b, &c) == nil {
			u.configs[d] = c
		}
	}
}

// finish says the archive is read and waits for the jobs that can still
// run (staged layers); abort stops at once. Both are safe on nil and twice.
func (u *importUnpacker) finish() { u.end(false) }
func (u *importUnpacker) abort()  { u.end(true) }

func (u *importUnpacker) end(stop bool) {
	if u == nil {
		return
	}
	u.mu.Lock()
	u.closed = true
	if stop {
		u.cancel()
	}
	u.dropStreamsLocked()
	u.wake.Broadcast()
	u.mu.Unlock()
	<-u.done
}
