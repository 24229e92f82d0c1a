package lazy

import (
	"sync"
	"sync/atomic"
	"time"
)

// A sequential read of a large lazy file moves every byte through two
// buffers: the compressed bytes of a request and each decompressed chunk.
// Allocated afresh, they cost more than the copies into them: the garbage
// collector hands much of that memory back to the kernel, and on a VM each
// first touch of a page again is an expensive fault (a 1 GiB read faulted
// in some 200-450 MiB). So buffers are pooled, and a decompressed chunk,
// shared by the LRU and its readers, goes back to the pool when the last
// of them releases it.

// Buffers from minPooled to maxPooled bytes are pooled, in size classes
// of powers of two up to 1 MiB and whole MiBs above (a request of two
// 4 MiB chunks of incompressible data is a little over 8 MiB);
// pooledBytes bounds what the free lists keep.
// pooledBytes covers what a sequential read cycles through besides the
// LRU's chunks: a compressed request and its chunks for each prefetch in
// flight, and the chunks the LRU lets go. The free lists are dropped once
// the pool has been idle for poolIdle, so that an idle daemon stays small.
const (
	minPooled   = 256 << 10
	maxPooled   = 32 << 20
	pooledBytes = 64 << 20
	poolIdle    = 10 * time.Second
)

// bufs is the daemon's one pool: layers share it.
var bufs = &bufPool{free: map[int][][]byte{}, max: pooledBytes}

type bufPool struct {
	mu    sync.Mutex
	free  map[int][][]byte // size class -> free buffers of that capacity
	kept  int              // bytes in free
	max   int
	used  bool        // since the trimmer last looked
	timer *time.Timer // the trimmer, while free holds buffers
}

func sizeClass(n int) int {
	if n > 1<<20 {
		return (n + 1<<20 - 1) &^ (1<<20 - 1)
	}
	c := minPooled
	for c < n {
		c <<= 1
	}
	return c
}

// get returns a buffer of n bytes with undefined contents.
func (p *bufPool) get(n int) []byte {
	if n < minPooled || n > maxPooled {
		return make([]byte, n)
	}
	c := sizeClass(n)
	p.mu.Lock()
	if fl := p.free[c]; len(fl) > 0 {
		b := fl[len(fl)-1]
		p.free[c] = fl[:len(fl)-1]
		p.kept -= c
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	return make([]byte, n, c)
}

// put gives b back; nothing may use it afterwards.
func (p *bufPool) put(b []byte) {
	c := cap(b)
	if c < minPooled || c > maxPooled || c != sizeClass(c) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kept+c > p.max {
		return
	}
	p.free[c] = append(p.free[c], b[:c])
	p.kept += c
	p.used = true
	if p.timer == nil {
		p.timer = time.AfterFunc(poolIdle, p.trim)
	}
}

// trim drops the free buffers if the pool was not used since it last
// looked, and looks again later otherwise.
func (p *bufPool) trim() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used {
		p.used = false
		p.timer.Reset(poolIdle)
		return
	}
	clear(p.free)
	p.kept = 0
	p.timer = nil
}

// chunkData is one verified, decompressed chunk. Each holder (the LRU, a
// reader) has a reference; the buffer returns to the pool with the last.
type chunkData struct {
	b    []byte
	refs atomic.Int32
}

// newChunkData returns b with one reference, the caller's.
func newChunkData(b []byte) *chunkData {
	c := &chunkData{b: b}
	c.refs.Store(1)
	return c
}

// acquire takes a reference, unless the last one is gone already (the
// buffer may then hold another chunk: look the chunk up again).
func (c *chunkData) acquire() bool {
	for {
		r := c.refs.Load()
		if r <= 0 {
			return false
		}
		if c.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

func (c *chunkData) release() {
	if c.refs.Add(-1) == 0 {
		bufs.put(c.b)
	}
}

// pendingChunk is a chunk being fetched or read from the cache: readers of
// it wait for done instead of fetching it again. c == nil with err == nil
// means "not loaded after all" (a chunk after a bad one in one request):
// look again.
type pendingChunk struct {
	done chan struct{}
	c    *chunkData
	err  error
}
