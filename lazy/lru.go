package lazy

import (
	"container/list"
	"sync"
)

// chunkLRU keeps recently read decompressed chunks, up to a byte budget, so
// that a file read in 128 KiB requests does not decompress its 4 MiB chunk
// for each of them.
type chunkLRU struct {
	mu     sync.Mutex
	budget int
	used   int
	order  *list.List // front: most recent
	items  map[chunkKey]*list.Element
}

type lruItem struct {
	key  chunkKey
	data []byte
}

func newChunkLRU(budget int) *chunkLRU {
	return &chunkLRU{budget: budget, order: list.New(), items: map[chunkKey]*list.Element{}}
}

func (c *chunkLRU) get(k chunkKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruItem).data, true
}

func (c *chunkLRU) put(k chunkKey, d []byte) {
	if len(d) > c.budget {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	c.items[k] = c.order.PushFront(&lruItem{key: k, data: d})
	c.used += len(d)
	for c.used > c.budget {
		e := c.order.Back()
		it := e.Value.(*lruItem)
		c.order.Remove(e)
		delete(c.items, it.key)
		c.used -= len(it.data)
	}
}
