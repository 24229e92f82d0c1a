package index

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
)

// Listing is bound by JSON decoding (about four fifths of the time for
// blob records), not by badger. So list iterates and calls fn on the
// caller's goroutine, in key order, while a few workers decode batches of
// copied values ahead of it. The workers touch only copies, never the
// transaction, so fn may use the transaction (TxView.List) as usual.

// listBatch is how many records go to a decoder at once; a listing shorter
// than one batch is decoded inline, without starting any goroutine.
const listBatch = 256

type rawBatch[T any] struct {
	keys []string
	ends []int  // value i is buf[ends[i-1]:ends[i]]
	buf  []byte // the batch's values, copied out of badger
	vals []T
	bad  int // index of the first value that failed to decode, or -1
	err  error
	done chan struct{}
}

// reset empties b for reuse, keeping its buffers.
func (b *rawBatch[T]) reset() {
	b.keys, b.ends, b.buf = b.keys[:0], b.ends[:0], b.buf[:0]
	b.err, b.done = nil, nil
}

func (b *rawBatch[T]) add(key string, item *badger.Item) error {
	err := item.Value(func(v []byte) error {
		if b.buf == nil {
			// Records of one table are alike in size: room for a batch
			// of this one plus a margin avoids regrowing.
			b.buf = make([]byte, 0, listBatch*(len(v)+len(v)/2+16))
		}
		b.buf = append(b.buf, v...)
		return nil
	})
	if err != nil {
		return err
	}
	b.keys = append(b.keys, key)
	b.ends = append(b.ends, len(b.buf))
	return nil
}

func (b *rawBatch[T]) decode(stop *atomic.Bool) {
	if cap(b.vals) < len(b.keys) {
		b.vals = make([]T, len(b.keys))
	}
	// Unmarshal merges into what is there (maps, slices), so reused
	// values must be zeroed.
	b.vals = b.vals[:len(b.keys)]
	clear(b.vals)
	b.bad = -1
	start := 0
	for i, end := range b.ends {
		if stop != nil && stop.Load() {
			return
		}
		if err := json.Unmarshal(b.buf[start:end], &b.vals[i]); err != nil {
			b.bad, b.err = i, err
			return
		}
		start = end
	}
}

func (t Table[T]) list(ctx context.Context, txn *badger.Txn, prefix string, fn func(string, T) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = append([]byte(t.prefix), prefix...)
	// Records are far below badger's value threshold, so values live in the
	// LSM tree next to their keys. Prefetching would only add a goroutine
	// and a copy per record.
	opts.PrefetchValues = false
	it := txn.NewIterator(opts)
	defer it.Close()

	// deliver hands a decoded batch to fn, in order.
	deliver := func(b *rawBatch[T]) error {
		for i, k := range b.keys {
			if i == b.bad {
				return fmt.Errorf("decode %s: %w", t.name(k), b.err)
			}
			if err := fn(k, b.vals[i]); err != nil {
				return err
			}
		}
		return nil
	}

	var (
		work    chan *rawBatch[T]
		stop    atomic.Bool
		pending []*rawBatch[T] // sent to the workers, not yet delivered
		free    []*rawBatch[T] // delivered, to be reused
		workers = min(runtime.GOMAXPROCS(0), 4)
	)
	defer func() {
		if work != nil {
			stop.Store(true)
			close(work)
		}
	}()

	cur := &rawBatch[T]{}
	skip := len(t.prefix)
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if err := cur.add(string(item.Key()[skip:]), item); err != nil {
			return fmt.Errorf("read %s: %w", t.name(string(item.Key()[skip:])), err)
		}
		if len(cur.keys) < listBatch {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if work == nil {
			work = make(chan *rawBatch[T], workers)
			for range workers {
				go func() {
					for b := range work {
						b.decode(&stop)
						close(b.done)
					}
				}()
			}
		}
		cur.done = make(chan struct{})
		work <- cur
		pending = append(pending, cur)
		if n := len(free); n > 0 {
			cur, free = free[n-1], free[:n-1]
			cur.reset()
		} else {
			cur = &rawBatch[T]{}
		}
		// Keep a bounded window in flight: enough to keep every worker
		// busy, few enough that memory stays small.
		for len(pending) > 2*workers {
			<-pending[0].done
			if err := deliver(pending[0]); err != nil {
				return err
			}
			free = append(free, pending[0])
			pending = pending[1:]
		}
	}
	for _, b := range pending {
		<-b.done
		if err := deliver(b); err != nil {
			return err
		}
	}
	if len(cur.keys) > 0 {
		cur.decode(nil)
		return deliver(cur)
	}
	return nil
}
