package daemon

import (
	"log/slog"
	"sync"

	"github.com/casfs/casfs/internal/hugeheap"
)

// heapReserve is the heap address space a process that holds a store
// asks huge pages for: more than the heap of the mount daemon at its
// busiest in the bench (a lazy pull of a 14k-entry image peaks under
// 80 MiB). Commands that go through another process's socket do not
// ask: they allocate little, and the reservation costs some 300 faults.
const heapReserve = 256 << 20

var reserveOnce sync.Once

// reserveHeap gives the heap huge pages once per process (hugeheap says
// why); it is a hint, and its failure only a debug line.
func reserveHeap() {
	reserveOnce.Do(func() {
		if err := hugeheap.Reserve(heapReserve); err != nil {
			slog.Debug("heap stays in 4 KiB pages", "err", err)
		}
	})
}
