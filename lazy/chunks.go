package lazy

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A sequential read of a large lazy file moves every byte through two
// buffers: the compressed bytes of a request and each decompressed chunk.
// Allocated afresh, they cost more than the copies into them: the garbage
// collector hands much of that memory back to the kernel, and on a VM each
// first touch of a page again is an expensive fault (a 1 GiB read faulted
// in some 200-450 MiB, a third of the daemon's CPU). So buffers are
// pooled, and a decompressed chunk, shared by the LRU and its readers,
// goes back to the pool when the last of them releases it.
//
// Pooled buffers are mapped outside the Go heap with transparent huge
// pages where the kernel offers them (THP "madvise" mode, Debian's
// default, gives the Go heap none): touching 64 MiB of fresh 4 KiB pages
// took 170-280 ms on the 2-core VM the bench runs on, and 4-6 ms in 2 MiB
// pages. A mapped buffer is unmapped when the pool lets it go, so the
// references below must be exact: nothing may touch a buffer after put.

// Buffers from minPooled to maxPooled bytes are pooled, in size classes:
// powers of two up to 2 MiB, whole 2 MiB pages above (a request of two
// 4 MiB chunks of incompressible data is a little over 8 MiB).
// pooledBytes covers what a sequential read cycles through besides the
// LRU's chunks: a compressed request and its chunks for each prefetch in
// flight, and the chunks the LRU lets go. The free lists are dropped once
// the pool has been idle for poolIdle, so that an idle daemon stays small.
const (
	minPooled   = 256 << 10
	maxPooled   = 32 << 20
	pooledBytes = 64 << 20
	poolIdle    = 10 * time.Second
	hugePage    = 2 << 20
)

// bufs is the daemon's one pool: layers share it.
var bufs = newBufPool(pooledBytes)

type bufPool struct {
	mu     sync.Mutex
	free   map[int][][]byte // size class -> free buffers of that capacity
	kept   int              // bytes in free
	max    int
	mapped map[*byte]bool // buffers mapped outside the heap, by first byte
	used   bool           // since the trimmer last looked
	timer  *time.Timer    // the trimmer, while free holds buffers
}

func newBufPool(max int) *bufPool {
	return &bufPool{free: map[int][][]byte{}, max: max, mapped: map[*byte]bool{}}
}

func sizeClass(n int) int {
	if n > hugePage {
		return (n + hugePage - 1) &^ (hugePage - 1)
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
	b, err := unix.Mmap(-1, 0, c, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		p.mu.Unlock()
		return make([]byte, n, c)
	}
	if c >= hugePage {
		unix.Madvise(b, unix.MADV_HUGEPAGE) // a hint: 4 KiB pages otherwise
	}
	p.mapped[&b[0]] = true
	p.mu.Unlock()
	return b[:n]
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
		p.release(b)
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
	for _, fl := range p.free {
		for _, b := range fl {
			p.release(b)
		}
	}
	clear(p.free)
	p.kept = 0
	p.timer = nil
}

// release unmaps b if it was mapped (the heap's are the collector's).
// p.mu is held.
func (p *bufPool) release(b []byte) {
	b = b[:cap(b)]
	if p.mapped[&b[0]] {
		delete(p.mapped, &b[0])
		unix.Munmap(b)
	}
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
