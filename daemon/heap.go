package daemon

import (
	"log/slog"
	"sync"

	"github.com/casfs/casfs/internal/hugeheap"
)

// heapReserve is the heap address space given huge pages (hugeheap says
// why): more than the mount daemon's heap at its busiest in the bench (a
// lazy pull of a 14k-entry image peaks under 80 MiB).
const heapReserve = 256 << 20

var reserveOnce sync.Once

// reserveHeap reserves the range once per process. A command that holds
// the store asks huge pages for its whole (short) run; a daemon only
// during the bursts of a TOC's decoding (lazy.Open), with the range
// reserved at the first (hugeheap says why). Commands that go through
// another process's socket reserve nothing: they allocate little, and the
// reservation costs some 300 faults.
func reserveHeap(command bool) {
	reserveOnce.Do(func() {
		if !command {
			hugeheap.ReserveAtFirstBurst(heapReserve)
			return
		}
		if err := hugeheap.Reserve(heapReserve, true); err != nil {
			slog.Debug("heap stays in 4 KiB pages", "err", err)
		}
	})
}
