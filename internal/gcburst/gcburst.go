// Package gcburst runs short bursts of allocation under a laxer garbage
// collector. Decoding an eStargz TOC allocates tens of megabytes of small
// objects within a few hundred milliseconds, on the path of a lazy start;
// with the default GOGC the collector runs many times during that burst
// and costs about 40% of its CPU. Raising GOGC for the burst alone keeps
// the daemon's steady-state memory where it was.
package gcburst

import (
	"runtime/debug"
	"sync"
)

// percent is the GOGC a burst runs under: the heap may grow to five times
// what is live before a collection.
const percent = 400

var (
	mu     sync.Mutex
	active int
	prev   int
)

// Begin starts a burst and returns the function that ends it. Bursts may
// overlap: the collector goes back to its setting when the last one ends.
// A setting laxer than the burst's (GOGC=off, or above percent) is kept.
func Begin() (end func()) {
	mu.Lock()
	if active == 0 {
		prev = debug.SetGCPercent(percent)
		if prev < 0 || prev > percent {
			debug.SetGCPercent(prev)
		}
	}
	active++
	mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			mu.Lock()
			if active--; active == 0 {
				debug.SetGCPercent(prev)
			}
			mu.Unlock()
		})
	}
}
