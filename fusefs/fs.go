package fusefs

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/layers/merged"
	gfs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options tune the filesystem. The zero value is usable.
type Options struct {
	// Logger receives the filesystem's log lines (slog.Default() if nil).
	Logger *slog.Logger
	// ImmutableTimeout is how long the kernel may cache entries and
	// attributes of things that never change under one inode: blobs, image
	// files, rootfs trees. Default 1h.
	ImmutableTimeout time.Duration
	// ListingTimeout is how long the kernel may cache names in the listing
	// directories (blobs/<alg>/, images/..., rootfs/) and failed lookups.
	// Changes are pushed to the kernel by Refresh at once; this only bounds
	// how stale a mount can get if a change is never announced. Default 30s.
	ListingTimeout time.Duration
	// RefreshTimeout bounds the Source calls Invalidate makes. Default 30s.
	RefreshTimeout time.Duration
	// StatfsPath is a directory on the filesystem that holds the store:
	// statfs of the mount reports its figures (df, getconf NAME_MAX).
	StatfsPath string
	// PublicBlobs lets every user read blobs (blobs/, and an image's
	// manifest.json, config.json, index.json and layers/). By default they
	// are for root and the mount's owner only: a layer blob holds every
	// file of the layer, including those that rootfs/ shows only to their
	// owners (a 0600 file, /etc/shadow).
	PublicBlobs bool
}

// FS is the casfs filesystem. Create it with New, serve it with Mount.
type FS struct {
	src  Source
	opts Options
	log  *slog.Logger

	cur    atomic.Pointer[view]
	loadMu sync.Mutex // one Source listing at a time

	server atomic.Pointer[fuse.Server]
	raw    atomic.Pointer[rawFS] // the request layer, once mounted
	root   *rootDir
	// withOpendir keeps the OPENDIR and RELEASEDIR round trips (see
	// rawFS.OpenDir): only for measuring what they cost.
	withOpendir bool

	treesMu    sync.Mutex
	trees      map[string]*rtree     // rootfs id -> tree, built on first use
	byBase     map[uint64]*rtree     // inode base -> tree the kernel holds nodes of
	building   map[string]*treeBuild // rootfs id -> tree being built
	treeBuilds atomic.Int64          // trees built so far (for tests and measurements)
	treeSeq    uint64                // rootfs ids get inode bases in order of first use
	treeIdx    map[string]uint64     // kept across Refresh so inode numbers stay stable

	passMu   sync.Mutex
	passMode atomic.Int32 // passUnknown, passActive, passOff

	xattrCalls atomic.Int64 // getxattr/listxattr requests served (for measurements)
	dirOpens   atomic.Int64 // opendir/releasedir requests received (for measurements)
}

const (
	passUnknown int32 = iota
	passActive
	passOff
)

// rtree is one rootfs tree with the inode number base of its nodes. It is
// kept while the kernel holds any of its nodes and dropped when the kernel
// forgets the last one, so that trees nobody walks cost nothing; the next
// lookup builds it again, with the same inode numbers.
type rtree struct {
	fs   *FS
	id   string
	t    *merged.Tree
	base uint64
	// hasLabels and hasACLs say whether any node carries security.selinux
	// or a POSIX ACL xattr (see mnode.Getxattr).
	hasLabels, hasACLs bool
	// refs counts the kernel's references to the tree's nodes: one per
	// node id in a LOOKUP or READDIRPLUS reply, given back by FORGET.
	refs atomic.Int64
}

const (
	xattrSELinux    = "security.selinux"
	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
)

func newRtree(f *FS, id string, t *merged.Tree, base uint64) *rtree {
	rt := &rtree{fs: f, id: id, t: t, base: base}
	rt.hasLabels = t.HasXattr(func(name string) bool { return name == xattrSELinux })
	rt.hasACLs = t.HasXattr(func(name string) bool { return name == xattrACLAccess || name == xattrACLDefault })
	return rt
}

// acquireLocked takes a reference on the tree registered for rt's inode
// base, registering rt if none is, and returns the tree it took it on.
// The caller holds treesMu.
func (f *FS) acquireLocked(rt *rtree) *rtree {
	if cur := f.byBase[rt.base]; cur != nil {
		rt = cur
	} else {
		f.byBase[rt.base] = rt
	}
	rt.refs.Add(1)
	return rt
}

// releaseTree gives back n references; the last one drops the tree: the
// kernel holds none of its nodes, and the next lookup builds it again.
func (f *FS) releaseTree(rt *rtree, n int64) {
	if rt.refs.Add(-n) > 0 {
		return
	}
	f.treesMu.Lock()
	if rt.refs.Load() <= 0 {
		if f.byBase[rt.base] == rt {
			delete(f.byBase, rt.base)
		}
		if f.trees[rt.id] == rt {
			delete(f.trees, rt.id)
		}
	}
	f.treesMu.Unlock()
}

// treeByBase returns the tree whose nodes the kernel may know under an
// inode base.
func (f *FS) treeByBase(base uint64) *rtree {
	f.treesMu.Lock()
	defer f.treesMu.Unlock()
	return f.byBase[base]
}

// missingXattr is the error for an xattr a node does not have.
func (rt *rtree) missingXattr(name string) syscall.Errno {
	switch {
	case name == xattrSELinux && !rt.hasLabels,
		(name == xattrACLAccess || name == xattrACLDefault) && !rt.hasACLs:
		return syscall.EOPNOTSUPP
	}
	return syscall.ENODATA
}

// New returns a filesystem that shows src.
func New(src Source, opts Options) *FS {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ImmutableTimeout <= 0 {
		opts.ImmutableTimeout = time.Hour
	}
	if opts.ListingTimeout <= 0 {
		opts.ListingTimeout = 30 * time.Second
	}
	if opts.RefreshTimeout <= 0 {
		opts.RefreshTimeout = 30 * time.Second
	}
	f := &FS{src: src, opts: opts, log: opts.Logger, trees: map[string]*rtree{}, byBase: map[uint64]*rtree{}, building: map[string]*treeBuild{}, treeIdx: map[string]uint64{}}
	f.root = &rootDir{fs: f}
	return f
}

// Passthrough reports whether the kernel accepted FUSE passthrough for
// this mount; known is false until the first file was opened.
func (f *FS) Passthrough() (active, known bool) {
	switch f.passMode.Load() {
	case passActive:
		return true, true
	case passOff:
		return false, true
	}
	return false, false
}

// view returns the current snapshot, loading the first one on demand.
func (f *FS) view(ctx context.Context) (*view, syscall.Errno) {
	if v := f.cur.Load(); v != nil {
		return v, 0
	}
	f.loadMu.Lock()
	defer f.loadMu.Unlock()
	if v := f.cur.Load(); v != nil {
		return v, 0
	}
	v, err := loadView(ctx, f.src, f.log)
	if err != nil {
		f.log.Error("fuse: cannot list the store", "err", err)
		return nil, syscall.EIO
	}
	f.cur.Store(v)
	return v, 0
}

// Invalidate re-reads the Source's listing and makes the mount show it at
// once: call it after anything that adds or removes blobs, images or root
// filesystems (pull, tag, rm, prune). Errors are logged; the old listing
// stays in place.
func (f *FS) Invalidate() {
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.RefreshTimeout)
	defer cancel()
	if err := f.Refresh(ctx); err != nil {
		f.log.Error("fuse: refresh failed", "err", err)
	}
}

// Refresh is Invalidate with the caller's context and error.
func (f *FS) Refresh(ctx context.Context) error {
	f.loadMu.Lock()
	nv, err := loadView(ctx, f.src, f.log)
	if err != nil {
		f.loadMu.Unlock()
		return err
	}
	old := f.cur.Swap(nv)
	f.loadMu.Unlock()

	f.dropTrees(nv)
	if old != nil && f.server.Load() != nil {
		f.notify(old, nv)
	}
	return nil
}

// dropTrees forgets trees of rootfs ids that are gone.
func (f *FS) dropTrees(v *view) {
	f.treesMu.Lock()
	defer f.treesMu.Unlock()
	for id, rt := range f.trees {
		if !v.rootfs[id] {
			// The kernel may still hold nodes (a process inside): they
			// stay served until it forgets them.
			delete(f.trees, id)
			if rt.refs.Load() <= 0 && f.byBase[rt.base] == rt {
				delete(f.byBase, rt.base)
			}
		}
	}
}

// treeBuild is a tree being built; concurrent lookups wait for it.
type treeBuild struct {
	done chan struct{}
	rt   *rtree
	err  error
}

// tree returns the merged tree of one rootfs id with a reference taken
// (give it back with releaseTree), asking the Source once however many
// lookups want it at the same time.
func (f *FS) tree(ctx context.Context, id string) (*rtree, syscall.Errno) {
	f.treesMu.Lock()
	if rt := f.trees[id]; rt != nil {
		rt = f.acquireLocked(rt)
		f.treesMu.Unlock()
		return rt, 0
	}
	b := f.building[id]
	if b == nil {
		b = &treeBuild{done: make(chan struct{})}
		f.building[id] = b
		f.treesMu.Unlock()
		start := time.Now()
		t, err := f.src.Rootfs(ctx, id)
		f.log.Debug("fuse: rootfs tree built", "rootfs", id, "took", time.Since(start), "err", err)
		f.treesMu.Lock()
		delete(f.building, id)
		if err == nil {
			idx, ok := f.treeIdx[id]
			if !ok {
				f.treeSeq++
				idx = f.treeSeq
				f.treeIdx[id] = idx
			}
			b.rt = newRtree(f, id, t, idx<<32)
			f.trees[id] = b.rt
			f.treeBuilds.Add(1)
		}
		b.err = err
		close(b.done)
	}
	f.treesMu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, syscall.EINTR
	}
	if b.err != nil {
		return nil, f.errno("rootfs "+id, b.err)
	}
	f.treesMu.Lock()
	rt := f.acquireLocked(b.rt)
	f.treesMu.Unlock()
	return rt, 0
}

// errno maps a Source error to what the reading process sees, and logs
// the reason of anything but a plain "not found".
func (f *FS) errno(what string, err error) syscall.Errno {
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	f.log.Error("fuse: "+what+" failed", "err", err)
	return syscall.EIO
}

// ino returns a stable inode number for a synthetic node. Synthetic nodes
// have the top bit set; rootfs nodes never do (their base is a small index
// shifted by 32), so the two ranges cannot meet.
func ino(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	n := h.Sum64() | 1<<63
	if n == ^uint64(0) {
		n--
	}
	return n
}

func setTime(a *fuse.Attr, t time.Time) {
	s, ns := uint64(t.Unix()), uint32(t.Nanosecond())
	a.Mtime, a.Mtimensec = s, ns
	a.Ctime, a.Ctimensec = s, ns
	a.Atime, a.Atimensec = s, ns
}

func (f *FS) newChild(ctx context.Context, parent *gfs.Inode, ops gfs.InodeEmbedder, mode uint32, ino uint64) *gfs.Inode {
	return parent.NewInode(ctx, ops, gfs.StableAttr{Mode: mode & syscall.S_IFMT, Ino: ino})
}

func (f *FS) setTimeouts(out *fuse.EntryOut, entry, attr time.Duration) {
	out.SetEntryTimeout(entry)
	out.SetAttrTimeout(attr)
}
