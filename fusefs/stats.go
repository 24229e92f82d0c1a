package fusefs

import (
	"runtime"
	"runtime/debug"
)

// Stats is what the filesystem holds in memory, for the daemon's debug
// endpoint, tests and measurements.
type Stats struct {
	// Trees is the number of rootfs trees held: those the kernel holds a
	// node of, or that were just built.
	Trees int `json:"trees"`
	// TreeNodes is the number of inodes in those trees, TreeBytes an
	// estimate of the memory they take.
	TreeNodes int   `json:"tree_nodes"`
	TreeBytes int64 `json:"tree_bytes"`
	// KernelRefs is the number of references the kernel holds to tree
	// nodes (about one per node it has looked up and not forgotten). They
	// cost the daemon nothing beyond the trees.
	KernelRefs int64 `json:"kernel_refs"`
	// BlobNodes is the number of blob files under blobs/ the kernel holds
	// (about 150 bytes each; dropped when the kernel forgets them).
	BlobNodes int `json:"blob_nodes"`
	// TreeBuilds counts the trees built since the mount started.
	TreeBuilds int64 `json:"tree_builds"`
	// HeapAlloc, HeapSys and Sys are the Go runtime's figures (bytes of
	// live heap objects, heap memory obtained from the OS, all memory
	// obtained from the OS) after a garbage collection.
	HeapAlloc uint64 `json:"heap_alloc"`
	HeapSys   uint64 `json:"heap_sys"`
	Sys       uint64 `json:"sys"`
}

// Stats collects garbage (returning freed memory to the OS), then reports
// what the filesystem holds.
func (f *FS) Stats() Stats {
	debug.FreeOSMemory()
	var s Stats
	f.treesMu.Lock()
	held := map[*rtree]bool{}
	for _, rt := range f.trees {
		held[rt] = true
	}
	for _, rt := range f.byBase {
		held[rt] = true
	}
	for rt := range held {
		s.Trees++
		s.TreeNodes += rt.t.Len()
		s.TreeBytes += rt.t.Bytes()
		s.KernelRefs += rt.refs.Load()
	}
	f.treesMu.Unlock()
	s.TreeBuilds = f.treeBuilds.Load()
	s.BlobNodes = f.heldBlobs()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.HeapAlloc, s.HeapSys, s.Sys = ms.HeapAlloc, ms.HeapSys, ms.Sys
	return s
}

// heldTrees is the number of trees the kernel holds nodes of, without
// Stats' garbage collection.
func (f *FS) heldTrees() int {
	f.treesMu.Lock()
	defer f.treesMu.Unlock()
	return len(f.byBase)
}

// heldBlobs is the number of blob files the kernel holds nodes of.
func (f *FS) heldBlobs() int {
	r := f.raw.Load()
	if r == nil {
		return 0
	}
	r.blobsMu.Lock()
	defer r.blobsMu.Unlock()
	return len(r.blobNodes)
}
