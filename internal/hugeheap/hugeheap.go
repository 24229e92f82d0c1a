// Package hugeheap backs the Go heap with transparent huge pages.
//
// On a VM each first touch of a 4 KiB page is a fault the hypervisor takes
// part in: on the 2-core VM the bench runs on, touching 64 MiB of fresh
// memory took 170-280 ms in 4 KiB pages and 4-6 ms in 2 MiB ones. Decoding
// the TOCs of a realistic eStargz image grows the daemon's heap by some
// 35 MiB within a few hundred milliseconds, and its 8,600 faults were most
// of a lazy pull's CPU. Under the kernel's THP mode "madvise" (Debian's
// default) the Go heap gets no huge pages: the runtime does not ask.
//
// ReserveAtFirstBurst has the runtime map the next n bytes of heap address
// space without touching them (one large allocation, freed at once) and keeps
// the mapping that holds them, so that huge pages can be asked for it:
// the heap's growth into that range then faults 2 MiB at a time. It is a
// hint: with THP off it changes nothing, and a heap that outgrows the
// range is faulted in as before. Untouched, the range costs address space,
// not memory.
//
// Huge pages keep a sparse heap resident in 2 MiB pieces, and a fault of
// one can stall in the kernel's compaction under memory pressure, so they
// are asked for only around bursts of allocation (Begin), with the range
// reserved at the first (ReserveAtFirstBurst).
package hugeheap

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	mu      sync.Mutex // guards what follows, never held while reserving
	lo, hi  uintptr    // the reserved mapping; hi == 0 before the first burst
	bursts  int
	atBurst int // bytes to reserve at the first burst

	// reserving is held while the range is reserved (an allocation and
	// a collection, 10-30 ms): a burst waits for it, nothing else does.
	reserving sync.Mutex
	prepared  atomic.Bool
)

// ReserveAtFirstBurst has the first Begin reserve n bytes, for huge pages
// during bursts only. A long-lived process that may never have a burst
// keeps its heap as it was: a reservation made at start raised the mount
// daemon's RSS after walking ten rootfs trees from 52 to 63 MiB, and from
// 33 to 43 MiB once the kernel forgot them, with no huge page in use.
func ReserveAtFirstBurst(n int) {
	mu.Lock()
	atBurst = n
	mu.Unlock()
}

// Prepare makes the reservation of the first burst now, in the
// background, for a caller that knows a burst is coming after a wait (a
// lazy pull decodes its TOCs once their bytes arrive), and returns at
// once: the layers of one pull call it side by side, and each went on
// fetching only once the first one's reservation was made.
func Prepare() {
	if prepared.CompareAndSwap(false, true) {
		go reserveDue()
	}
}

// reserveDue makes the reservation ReserveAtFirstBurst asked for, once,
// and returns when it is made (by this call or another).
func reserveDue() {
	reserving.Lock()
	defer reserving.Unlock()
	mu.Lock()
	n := atBurst
	if hi != 0 {
		n = 0
	}
	atBurst = 0
	mu.Unlock()
	if n == 0 {
		return
	}
	l, h, err := reserve(n)
	if err != nil {
		return // a hint: nothing to do on failure
	}
	mu.Lock()
	lo, hi = l, h
	mu.Unlock()
}

// reserve has the runtime map n more bytes of heap and returns the
// mapping that holds them.
func reserve(n int) (uintptr, uintptr, error) {
	b := make([]byte, n) // fresh from the kernel: the runtime does not zero it
	l, h, err := mappingOf(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	runtime.KeepAlive(b)
	b = nil
	runtime.GC() // the range is free for the heap's next spans
	if err != nil {
		return 0, 0, fmt.Errorf("reserve heap: %w", err)
	}
	return l, h, nil
}

// Begin starts a burst of allocation, during which the reserved range
// asks for huge pages, and returns the function that ends it. Bursts may
// overlap; pages faulted in as huge pages stay so until the runtime
// releases them.
func Begin() (end func()) {
	reserveDue()
	mu.Lock()
	if bursts++; bursts == 1 && hi != 0 {
		advise(true)
	}
	mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			mu.Lock()
			if bursts--; bursts == 0 && hi != 0 {
				advise(false)
			}
			mu.Unlock()
		})
	}
}

// advise sets the reserved range's advice; mu is held.
func advise(on bool) error {
	advice := uintptr(unix.MADV_NOHUGEPAGE)
	if on {
		advice = unix.MADV_HUGEPAGE
	}
	// By address: the mapping is the runtime's, not a Go object.
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, lo, hi-lo, advice); e != 0 {
		return fmt.Errorf("madvise heap: %w", e)
	}
	return nil
}

// mappingOf returns the bounds of the mapping holding addr.
func mappingOf(addr uintptr) (lo, hi uintptr, err error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "%x-%x", &lo, &hi); err == nil && lo <= addr && addr < hi {
			return lo, hi, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	return 0, 0, fmt.Errorf("no mapping holds %#x", addr)
}
