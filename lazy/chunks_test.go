package lazy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
)

func TestSizeClasses(t *testing.T) {
	for n, want := range map[int]int{1: minPooled, minPooled: minPooled, minPooled + 1: 2 * minPooled,
		1 << 20: 1 << 20, 1<<20 + 1: 2 << 20, 2<<20 + 1: 4 << 20, 4 << 20: 4 << 20, 8<<20 + 4096: 10 << 20} {
		if got := sizeClass(n); got != want {
			t.Errorf("sizeClass(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestPoolReusesAndBounds: a buffer given back is handed out again for a
// size of its class; the free lists keep at most max bytes and unmap what
// they let go; sizes outside the pooled range are not kept.
func TestPoolReusesAndBounds(t *testing.T) {
	p := newBufPool(10 << 20)
	defer func() {
		p.mu.Lock()
		if p.timer != nil {
			p.timer.Stop()
		}
		p.mu.Unlock()
	}()
	a := p.get(4<<20 - 100)
	if len(a) != 4<<20-100 || cap(a) != 4<<20 {
		t.Fatalf("get: len %d cap %d", len(a), cap(a))
	}
	p.put(a)
	b := p.get(3<<20 + 1)
	if &b[0] != &a[0] || len(b) != 3<<20+1 {
		t.Fatal("a buffer of the same class was not reused")
	}
	for i := range b {
		b[i] = byte(i) // the whole class is usable memory
	}
	c, d := p.get(4<<20), p.get(4<<20)
	if len(p.mapped) != 3 {
		t.Fatalf("%d buffers mapped, want 3", len(p.mapped))
	}
	p.put(b)
	p.put(c)
	p.put(d)                   // over the 10 MiB bound: unmapped
	p.put(make([]byte, 4<<20)) // a heap buffer over the bound: dropped
	p.put(make([]byte, 100))   // under minPooled: dropped
	if p.kept != 8<<20 || len(p.free[4<<20]) != 2 || len(p.mapped) != 2 {
		t.Fatalf("kept %d bytes in %d buffers, %d mapped; want 8 MiB in 2, 2 mapped", p.kept, len(p.free[4<<20]), len(p.mapped))
	}
	p.used = false
	p.trim()
	if p.kept != 0 || len(p.free) != 0 || len(p.mapped) != 0 {
		t.Fatal("an idle pool kept its buffers")
	}
}

// TestChunkReferences: the LRU and each reader hold a reference; the buffer
// goes back only with the last, after which the chunk cannot be taken.
func TestChunkReferences(t *testing.T) {
	lru := newChunkLRU(8 << 20)
	c := newChunkData(make([]byte, 4<<20))
	lru.put(chunkKey{1, 0}, c)
	reader, ok := lru.get(chunkKey{1, 0})
	if !ok || reader != c || c.refs.Load() != 3 {
		t.Fatalf("get: ok %v, refs %d, want 3 (creator, LRU, reader)", ok, c.refs.Load())
	}
	c.release() // the creator's
	lru.put(chunkKey{2, 0}, newChunkData(make([]byte, 4<<20)))
	lru.put(chunkKey{3, 0}, newChunkData(make([]byte, 4<<20))) // evicts 1
	if lru.has(chunkKey{1, 0}) || c.refs.Load() != 1 {
		t.Fatalf("after eviction: in LRU %v, refs %d, want only the reader's", lru.has(chunkKey{1, 0}), c.refs.Load())
	}
	c.release()
	if c.acquire() {
		t.Fatal("a chunk whose last reference is gone was taken again")
	}
}

// TestSequentialReadersGetExactBytes: readers going through a many-chunk
// file at once, sequentially (prefetch requests of several chunks, chunks
// evicted from the LRU and their buffers reused) and at random offsets,
// all read the file's bytes; and one reader's requests in order cover
// several chunks each.
func TestSequentialReadersGetExactBytes(t *testing.T) {
	t.Parallel()
	desc, blob := buildBlob(t, testFiles(), 16<<10)
	rb := &remoteBlob{blob: blob}
	l, err := openLayer(t, desc, rb, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l.mem = newChunkLRU(64 << 10) // a few chunks: evictions while reading
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ra, err := l.Open(context.Background(), "usr/big")
			if err != nil {
				errs[i] = err
				return
			}
			got := make([]byte, len(bigFile))
			step := 3000 + 1000*i
			for off := 0; off < len(got); off += step {
				at := off
				if i%2 == 1 { // from the end backwards: not sequential
					at = max(0, len(got)-off-step)
				}
				if _, err := ra.ReadAt(got[at:min(at+step, len(got))], int64(at)); err != nil && !errors.Is(err, io.EOF) {
					errs[i] = err
					return
				}
			}
			if !bytes.Equal(got, bigFile) {
				errs[i] = errors.New("bytes differ from the file")
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// How many requests the readers above make depends on how their
	// reads and evictions interleave; one sequential reader's does not.
	rb = &remoteBlob{blob: blob}
	l, err = openLayer(t, desc, rb, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ra, err := l.Open(context.Background(), "usr/big")
	if err != nil {
		t.Fatal(err)
	}
	reqs := rb.requests.Load()
	got := make([]byte, len(bigFile))
	for off := 0; off < len(got); off += 4096 {
		if _, err := ra.ReadAt(got[off:min(off+4096, len(got))], int64(off)); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, bigFile) {
		t.Fatal("a sequential reader's bytes differ from the file")
	}
	chunks := (len(bigFile) + 16<<10 - 1) / (16 << 10)
	if n := rb.requests.Load() - reqs; n > int64(chunks/4) {
		t.Fatalf("%d requests for a file of %d chunks read in order: requests did not cover several chunks each", n, chunks)
	}
}
