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
	root   *rootDir

	treesMu sync.Mutex
	trees   map[string]*rtree // rootfs id -> tree, built on first use
	treeSeq uint64            // rootfs ids get inode bases in order of first use
	treeIdx map[string]uint64 // kept across Refresh so inode numbers stay stable

	passMu   sync.Mutex
	passMode atomic.Int32 // passUnknown, passActive, passOff

	xattrCalls atomic.Int64 // getxattr/listxattr requests served (for measurements)
}

const (
	passUnknown int32 = iota
	passActive
	passOff
)

// rtree is one rootfs tree with the inode number base of its nodes.
type rtree struct {
	t    *merged.Tree
	base uint64
	// hasLabels and hasACLs say whether any node carries security.selinux
	// or a POSIX ACL xattr (see mnode.Getxattr).
	hasLabels, hasACLs bool
}

const (
	xattrSELinux    = "security.selinux"
	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
)

func newRtree(t *merged.Tree, base uint64) *rtree {
	rt := &rtree{t: t, base: base}
	var walk func(n *merged.Node)
	walk = func(n *merged.Node) {
		for _, x := range n.Xattrs {
			switch x.Name {
			case xattrSELinux:
				rt.hasLabels = true
			case xattrACLAccess, xattrACLDefault:
				rt.hasACLs = true
			}
		}
		for _, c := range n.Children() {
			if c.Node.IsDir() || len(c.Node.Xattrs) > 0 {
				walk(c.Node)
			}
		}
	}
	walk(t.Root)
	return rt
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
	f := &FS{src: src, opts: opts, log: opts.Logger, trees: map[string]*rtree{}, treeIdx: map[string]uint64{}}
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
	for id := range f.trees {
		if !v.rootfs[id] {
			delete(f.trees, id)
		}
	}
}

// tree returns the merged tree of one rootfs id, asking the Source once.
func (f *FS) tree(ctx context.Context, id string) (*rtree, syscall.Errno) {
	f.treesMu.Lock()
	rt := f.trees[id]
	f.treesMu.Unlock()
	if rt != nil {
		return rt, 0
	}
	t, err := f.src.Rootfs(ctx, id)
	if err != nil {
		return nil, f.errno("rootfs "+id, err)
	}
	f.treesMu.Lock()
	defer f.treesMu.Unlock()
	if rt := f.trees[id]; rt != nil {
		return rt, 0
	}
	idx, ok := f.treeIdx[id]
	if !ok {
		f.treeSeq++
		idx = f.treeSeq
		f.treeIdx[id] = idx
	}
	rt = newRtree(t, idx<<32)
	f.trees[id] = rt
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
