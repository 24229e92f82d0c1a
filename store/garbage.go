package store

// Garbage is leases and garbage collection (ctr leases, prune, gc).
type Garbage interface{}
