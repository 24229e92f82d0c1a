package daemon

// heapReserve is the heap address space the daemon gives huge pages
// during bursts of allocation (a TOC's decoding, a tree built from TOCs:
// internal/hugeheap says why): more than the daemon's heap at its busiest
// in the bench (a lazy pull of a 14k-entry image peaks under 80 MiB).
//
// Commands that open the store themselves do not ask: with huge pages for
// their whole run an embedded pull of the realistic image took 1.1-1.3 s
// instead of 1.4 s, but under load a huge page fault can stall in the
// kernel's compaction, and a command that holds the store must serve its
// socket to the commands waiting on it within seconds.
const heapReserve = 256 << 20
