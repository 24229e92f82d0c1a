package lazy

import (
	"container/list"
	"sync"
)

// chunkLRU keeps recently read decompressed chunks, up to a byte budget, so
// that a file read in 128 KiB requests does not decompress its 4 MiB chunk
// for each of them. It holds a reference on each chunk it keeps.
type chunkLRU struct {
	mu     sync.Mutex
	budget int
	used   int
	order  *list.List // front: most recent
	items  map[chunkKey]*list.Element
}

type lruItem struct {
	key chunkKey
	c   *chunkData
}

func newChunkLRU(budget int) *chunkLRU {
	return &chunkLRU{budget: budget, order: list.New(), items: map[chunkKey]*list.Element{}}
}

// get returns the chunk with a reference for the caller to release.
func (c *chunkLRU) get(k chunkKey) (*chunkData, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	d := e.Value.(*lruItem).c
	d.acquire() // cannot fail: the LRU's own reference is held
	return d, true
}

func (c *chunkLRU) has(k chunkKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[k]
	return ok
}

// put keeps d (taking a reference of its own) unless k is kept already or
// d is over the budget.
func (c *chunkLRU) put(k chunkKey, d *chunkData) {
	if len(d.b) > c.budget {
		return
	}
	c.mu.Lock()
	if _, ok := c.items[k]; ok {
		c.mu.Unlock()
		return
	}
	d.acquire()
	c.items[k] = c.order.PushFront(&lruItem{key: k, c: d})
	c.used += len(d.b)
	var evicted []*chunkData
	for c.used > c.budget {
		e := c.order.Back()
		it := e.Value.(*lruItem)
		c.order.Remove(e)
		delete(c.items, it.key)
		c.used -= len(it.c.b)
		evicted = append(evicted, it.c)
	}
	c.mu.Unlock()
	for _, d := range evicted {
		d.release()
	}
}
