package fusefs

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/casfs/casfs/layers/merged"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// rawFS answers the kernel's requests for the nodes of rootfs trees itself
// and hands everything else (the root, blobs/, images/, rootfs/ itself) to
// go-fuse's node bridge.
//
// Why: the bridge keeps an Inode with maps and parent links for every node
// the kernel holds, about 380 bytes each, and a walk of a large image makes
// the kernel hold them all until memory gets short. A tree node needs none
// of that: its node id encodes the tree and the node (treeNodeFlag | the
// tree's inode base | merged.Ino), everything else is in the tree, and the
// only state kept for the kernel is one lookup count per tree. When that
// count drops to zero (the kernel forgot every node) the tree is dropped.
type rawFS struct {
	fuse.RawFileSystem // go-fuse's bridge
	f                  *FS

	// rootfsNode is the node id the bridge gave rootfs/ (the parent of
	// every tree root), learnt from the bridge's LOOKUP replies: the root
	// directory's READDIRPLUS gives no node ids (see namesOnly), so a
	// LOOKUP is the only way the kernel gets one.
	rootfsNode atomic.Uint64

	mu     sync.Mutex
	files  map[uint64]*treeFile // open tree files by handle
	nextFh uint64
	// backings are the passthrough backing ids by node id: the kernel
	// takes one backing file per inode, so every open of a node shares
	// the id registered by its first open (a second one fails with EIO,
	// e.g. exec of a binary that is already running).
	backings map[uint64]*backing
	// dirs are the open blobs/<alg>/ listings by handle.
	dirs map[uint64]*blobListing

	blobsMu sync.Mutex
	// blobNodes are the blob files the kernel holds, by node id (see
	// rawblobs.go).
	blobNodes map[uint64]*blobNode
	// algNodes are the node ids the bridge gave blobs/<alg>/, by alg.
	algNodes map[string]uint64
}

type backing struct {
	id   int32
	refs int
}

// treeNodeFlag marks node ids of tree nodes. The bridge numbers its nodes
// from 1 upwards, so it never reaches this range.
const treeNodeFlag = 1 << 63

func newRawFS(bridge fuse.RawFileSystem, f *FS) *rawFS {
	return &rawFS{RawFileSystem: bridge, f: f, files: map[uint64]*treeFile{}, backings: map[uint64]*backing{},
		dirs: map[uint64]*blobListing{}, blobNodes: map[uint64]*blobNode{}, algNodes: map[string]uint64{}}
}

func nodeID(rt *rtree, i merged.Ino) uint64 { return treeNodeFlag | rt.base | uint64(i) }

// node resolves a tree node id; ok is false for the bridge's nodes.
func (r *rawFS) node(id uint64) (rt *rtree, i merged.Ino, ok bool) {
	if id&treeNodeFlag == 0 {
		return nil, 0, false
	}
	rt = r.f.treeByBase(id &^ treeNodeFlag &^ 0xffffffff)
	i = merged.Ino(uint32(id))
	if rt == nil || !rt.t.Valid(i) {
		return nil, 0, true // a node of a tree the kernel had forgotten: cannot happen
	}
	return rt, i, true
}

// isRaw reports whether rawFS serves node id itself: a tree node or a
// blob file.
func (r *rawFS) isRaw(id uint64) bool { return id&(treeNodeFlag|blobNodeFlag) != 0 }

func ctxOf(cancel <-chan struct{}, h *fuse.InHeader) context.Context {
	return &fuse.Context{Caller: h.Caller, Cancel: cancel}
}

// entry fills a LOOKUP or READDIRPLUS reply for node i and counts the
// kernel's new reference.
func (r *rawFS) entry(rt *rtree, i merged.Ino, out *fuse.EntryOut) {
	rt.refs.Add(1)
	out.NodeId = nodeID(rt, i)
	out.Generation = 0
	rt.attr(i, &out.Attr)
	imm := r.f.opts.ImmutableTimeout
	out.SetEntryTimeout(imm)
	out.SetAttrTimeout(imm)
}

func (r *rawFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if rt, i, ok := r.node(h.NodeId); ok {
		if rt == nil {
			return fuse.ENOENT
		}
		var c merged.Ino
		switch name {
		case ".":
			c = i
		case "..":
			if i == merged.RootIno {
				return fuse.ENOENT // rootfs/ is the bridge's; only NFS export asks
			}
			c = rt.t.Parent(i)
		default:
			var found bool
			if c, found = rt.t.Child(i, name); !found {
				return fuse.ENOENT
			}
		}
		r.entry(rt, c, out)
		return fuse.OK
	}
	if isBlobNode(h.NodeId) {
		return fuse.ENOTDIR
	}
	if name != "." && name != ".." {
		if rn := r.rootfsNode.Load(); rn != 0 && h.NodeId == rn {
			return r.lookupTree(ctxOf(cancel, h), name, out)
		}
		if alg, ok := r.algDir(h.NodeId); ok {
			return r.lookupBlob(ctxOf(cancel, h), alg, name, out)
		}
	}
	st := r.RawFileSystem.Lookup(cancel, h, name, out)
	if st == fuse.OK {
		if out.Attr.Ino == rootfsIno {
			r.rootfsNode.Store(out.NodeId)
		}
		r.learnAlgDir(name, out)
	}
	return st
}

// rootfsIno is the inode number of rootfs/.
var rootfsIno = ino("top", nameRootfs)

// lookupTree answers rootfs/<id>: the root of that image's tree, built now
// if it is not held.
func (r *rawFS) lookupTree(ctx context.Context, id string, out *fuse.EntryOut) fuse.Status {
	v, errno := r.f.view(ctx)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if !v.rootfs[id] {
		return r.negative(out)
	}
	rt, errno := r.f.tree(ctx, id) // holds a reference for this reply
	if errno != 0 {
		return fuse.Status(errno)
	}
	r.entry(rt, merged.RootIno, out)
	r.f.releaseTree(rt, 1)
	// The name may go away with its image.
	out.SetEntryTimeout(r.f.opts.ListingTimeout)
	return fuse.OK
}

func (r *rawFS) Forget(id, nlookup uint64) {
	if !r.isRaw(id) {
		r.RawFileSystem.Forget(id, nlookup)
		return
	}
	if isBlobNode(id) {
		r.forgetBlob(id, nlookup)
		return
	}
	if rt, _, _ := r.node(id); rt != nil {
		r.f.releaseTree(rt, int64(nlookup))
	}
}

func (r *rawFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if isBlobNode(in.NodeId) {
		n := r.blobNode(in.NodeId)
		if n == nil {
			return fuse.ENOENT
		}
		r.blobAttr(n, &out.Attr)
		out.SetTimeout(r.f.opts.ImmutableTimeout)
		return fuse.OK
	}
	rt, i, ok := r.node(in.NodeId)
	if !ok {
		return r.RawFileSystem.GetAttr(cancel, in, out)
	}
	if rt == nil {
		return fuse.ENOENT
	}
	rt.attr(i, &out.Attr)
	out.SetTimeout(r.f.opts.ImmutableTimeout)
	return fuse.OK
}

func (r *rawFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	if isBlobNode(h.NodeId) {
		return nil, fuse.EINVAL
	}
	rt, i, ok := r.node(h.NodeId)
	if !ok {
		return r.RawFileSystem.Readlink(cancel, h)
	}
	if rt == nil {
		return nil, fuse.ENOENT
	}
	if rt.t.Mode(i)&unix.S_IFMT != unix.S_IFLNK {
		return nil, fuse.EINVAL
	}
	return []byte(rt.t.Target(i)), fuse.OK
}

func (r *rawFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if !r.isRaw(in.NodeId) {
		return r.RawFileSystem.Access(cancel, in)
	}
	if in.Mask&unix.W_OK != 0 {
		return fuse.EROFS
	}
	return fuse.OK // default_permissions: the kernel checks modes itself
}

// GetXAttr answers from memory. The kernel does not cache xattrs, so ls -l
// would cost two round trips per file (security.selinux and a POSIX ACL).
// For those names, when the whole tree has none, the answer is EOPNOTSUPP
// rather than ENODATA: ls (and libacl/libselinux users that follow the same
// convention) then remember that the device has no labels or ACLs and stop
// asking, while the kernel, which only remembers ENOSYS, keeps sending every
// other query, so real xattrs such as security.capability still show.
func (r *rawFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if isBlobNode(h.NodeId) {
		return 0, fuse.Status(syscall.EOPNOTSUPP) // as noXattrs
	}
	rt, i, ok := r.node(h.NodeId)
	if !ok {
		return r.RawFileSystem.GetXAttr(cancel, h, attr, dest)
	}
	r.f.xattrCalls.Add(1)
	if rt == nil {
		return 0, fuse.ENOENT
	}
	v, found := rt.t.Xattr(i, attr)
	if !found {
		return 0, fuse.Status(rt.missingXattr(attr))
	}
	if len(dest) == 0 {
		return uint32(len(v)), fuse.OK
	}
	if len(dest) < len(v) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (r *rawFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if isBlobNode(h.NodeId) {
		return 0, fuse.OK
	}
	rt, i, ok := r.node(h.NodeId)
	if !ok {
		return r.RawFileSystem.ListXAttr(cancel, h, dest)
	}
	r.f.xattrCalls.Add(1)
	if rt == nil {
		return 0, fuse.ENOENT
	}
	xs := rt.t.Xattrs(i)
	size := 0
	for _, x := range xs {
		size += len(x.Name) + 1
	}
	if len(dest) == 0 {
		return uint32(size), fuse.OK
	}
	if len(dest) < size {
		return uint32(size), fuse.ERANGE
	}
	off := 0
	for _, x := range xs {
		off += copy(dest[off:], x.Name)
		dest[off] = 0
		off++
	}
	return uint32(size), fuse.OK
}

// OpenDir answers ENOSYS when the kernel can do without opendir
// (FUSE_NO_OPENDIR_SUPPORT): from then on it opens no directory of this
// mount through the daemon and sends no RELEASEDIR, keeping every listing
// in its page cache as if FOPEN_CACHE_DIR|FOPEN_KEEP_CACHE (dirFlags) had
// been returned. A warm walk then costs the daemon nothing at all: those
// two round trips per directory were all it asked. Listings are served by
// offset (readDir, readBlobDir, bridgeReadDir), so no handle is needed.
func (r *rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	r.f.dirOpens.Add(1)
	if isBlobNode(in.NodeId) {
		return fuse.ENOTDIR
	}
	if r.noOpendir() {
		return fuse.ENOSYS
	}
	if alg, ok := r.algDir(in.NodeId); ok {
		return r.openBlobDir(ctxOf(cancel, &in.InHeader), alg, out)
	}
	rt, i, ok := r.node(in.NodeId)
	if !ok {
		return r.RawFileSystem.OpenDir(cancel, in, out)
	}
	if rt == nil {
		return fuse.ENOENT
	}
	if rt.t.Mode(i)&unix.S_IFMT != unix.S_IFDIR {
		return fuse.ENOTDIR
	}
	out.Fh = 0
	out.OpenFlags = dirFlags
	return fuse.OK
}

// noOpendir reports whether the kernel offered to do without OPENDIR.
func (r *rawFS) noOpendir() bool {
	if r.f.withOpendir {
		return false
	}
	srv := r.f.server.Load()
	if srv == nil {
		return false
	}
	ks := srv.KernelSettings()
	return ks != nil && ks.Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT != 0
}

func (r *rawFS) ReleaseDir(in *fuse.ReleaseIn) {
	r.f.dirOpens.Add(1)
	if _, ok := r.algDir(in.NodeId); ok {
		r.releaseBlobDir(in.Fh)
		return
	}
	if !r.isRaw(in.NodeId) {
		r.RawFileSystem.ReleaseDir(in)
	}
}

func (r *rawFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.readDir(cancel, in, out, false)
}

func (r *rawFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.readDir(cancel, in, out, true)
}

// readDir lists a tree directory from in.Offset (the index of the next
// entry), filling attributes too for READDIRPLUS: one round trip per
// buffer instead of a LOOKUP per name.
func (r *rawFS) readDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	if isBlobNode(in.NodeId) {
		return fuse.ENOTDIR
	}
	if alg, ok := r.algDir(in.NodeId); ok {
		return r.readBlobDir(ctxOf(cancel, &in.InHeader), alg, in, out, plus)
	}
	rt, dir, ok := r.node(in.NodeId)
	if !ok {
		return r.bridgeReadDir(cancel, in, out, plus)
	}
	if rt == nil {
		return fuse.ENOENT
	}
	t := rt.t
	n := t.NumEntries(dir)
	fillListing(out, int(min(in.Offset, uint64(n))), n, plus, func(k int) fuse.DirEntry {
		e := t.Entry(dir, k)
		return fuse.DirEntry{Name: e.Name, Mode: t.Mode(e.Ino), Ino: rt.base | uint64(e.Ino), Off: uint64(k + 1)}
	}, func(k int, eo *fuse.EntryOut) {
		r.entry(rt, t.Entry(dir, k).Ino, eo)
	})
	return fuse.OK
}

// bridgeReadDir lists a directory of the bridge. Without OPENDIR (see
// OpenDir) the kernel sends no handle: the listing is then opened for this
// one request and read from in.Offset (the bridge's listings seek).
func (r *rawFS) bridgeReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	read := r.RawFileSystem.ReadDir
	if plus {
		read = r.RawFileSystem.ReadDirPlus
	}
	if in.Fh != 0 {
		return read(cancel, in, out)
	}
	var opened fuse.OpenOut
	if st := r.RawFileSystem.OpenDir(cancel, &fuse.OpenIn{InHeader: in.InHeader, Flags: unix.O_RDONLY | unix.O_DIRECTORY}, &opened); st != fuse.OK {
		return st
	}
	defer r.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: in.InHeader, Fh: opened.Fh})
	at := *in
	at.Fh = opened.Fh
	return read(cancel, &at, out)
}

// fillListing adds the entries from index from of a listing of n names to
// out, each with its lookup reply for READDIRPLUS, until out is full. An
// entry's Off (set by entry) is where the listing goes on after it.
func fillListing(out *fuse.DirEntryList, from, n int, plus bool, entry func(k int) fuse.DirEntry, lookup func(k int, eo *fuse.EntryOut)) {
	for k := from; k < n; k++ {
		de := entry(k)
		if !plus {
			if !out.AddDirEntry(de) {
				return
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			return
		}
		lookup(k, eo)
	}
}

// treeFile is an open file of a tree.
type treeFile struct {
	file    *os.File       // a snapshot file, or nil
	content merged.Content // any other layer's content
	backing int32          // passthrough backing id, 0 if none
}

func (r *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if isBlobNode(in.NodeId) {
		return r.openBlob(cancel, in, out)
	}
	rt, i, ok := r.node(in.NodeId)
	if !ok {
		return r.RawFileSystem.Open(cancel, in, out)
	}
	if rt == nil {
		return fuse.ENOENT
	}
	if in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return fuse.EROFS
	}
	if rt.t.Mode(i)&unix.S_IFMT != unix.S_IFREG {
		return fuse.EINVAL
	}
	ctx := ctxOf(cancel, &in.InHeader)
	p := rt.t.Path(i)
	c, err := rt.t.Layer(i).Open(ctx, p)
	if err != nil {
		return fuse.Status(r.f.errno("open rootfs file "+p, err))
	}
	r.addFile(in.NodeId, c, out)
	return fuse.OK
}

// openBlob opens a blob file: the local blob, fetched first when the
// index knows it but the disk lacks it.
func (r *rawFS) openBlob(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n := r.blobNode(in.NodeId)
	if n == nil {
		return fuse.ENOENT
	}
	if in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return fuse.EROFS
	}
	f, err := r.f.src.OpenBlob(ctxOf(cancel, &in.InHeader), n.d)
	if err != nil {
		return fuse.Status(r.f.errno("open blob "+string(n.d), err))
	}
	r.addFile(in.NodeId, f, out)
	return fuse.OK
}

// addFile gives an opened file a handle, reading through passthrough when
// it is a local file and the kernel takes it.
func (r *rawFS) addFile(node uint64, c merged.Content, out *fuse.OpenOut) {
	tf := &treeFile{content: c}
	out.OpenFlags = fileFlags
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, isFile := c.(*os.File); isFile {
		tf.file = f
		b := r.backings[node]
		if b == nil {
			if id := r.f.backingFd(f); id != 0 {
				b = &backing{id: id}
				r.backings[node] = b
			}
		}
		if b != nil {
			b.refs++
			tf.backing = b.id
			out.BackingID = b.id
			out.OpenFlags |= fuse.FOPEN_PASSTHROUGH
			out.OpenFlags &^= fuse.FOPEN_KEEP_CACHE // the kernel reads the backing file's cache
		}
	}
	r.nextFh++
	out.Fh = r.nextFh
	r.files[out.Fh] = tf
}

func (r *rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if !r.isRaw(in.NodeId) {
		return r.RawFileSystem.Read(cancel, in, buf)
	}
	r.mu.Lock()
	tf := r.files[in.Fh]
	r.mu.Unlock()
	if tf == nil {
		return nil, fuse.EBADF
	}
	size := min(int(in.Size), len(buf))
	if tf.file != nil {
		return fuse.ReadResultFd(tf.file.Fd(), int64(in.Offset), size), fuse.OK
	}
	n, err := tf.content.ReadAt(buf[:size], int64(in.Offset))
	if err != nil && !errors.Is(err, io.EOF) {
		r.f.log.Error("fuse: read failed", "err", err)
		return nil, fuse.EIO
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

func (r *rawFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if !r.isRaw(in.NodeId) {
		r.RawFileSystem.Release(cancel, in)
		return
	}
	r.mu.Lock()
	tf := r.files[in.Fh]
	delete(r.files, in.Fh)
	var unregister int32
	if tf != nil && tf.backing != 0 {
		if b := r.backings[in.NodeId]; b != nil {
			if b.refs--; b.refs == 0 {
				delete(r.backings, in.NodeId)
				unregister = b.id
			}
		}
	}
	r.mu.Unlock()
	if tf == nil {
		return
	}
	if unregister != 0 {
		if srv := r.f.server.Load(); srv != nil {
			srv.UnregisterBackingFd(unregister)
		}
	}
	tf.content.Close()
}

func (r *rawFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	if r.isRaw(h.NodeId) {
		root := *h
		root.NodeId = fuse.FUSE_ROOT_ID
		return r.RawFileSystem.StatFs(cancel, &root, out)
	}
	return r.RawFileSystem.StatFs(cancel, h, out)
}

// The remaining operations do not apply to a read-only tree; the kernel
// refuses most of them on a read-only mount before asking.

func (r *rawFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.ENOSYS // the kernel falls back to GETATTR
	}
	return r.RawFileSystem.Statx(cancel, in, out)
}

func (r *rawFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.Lseek(cancel, in, out)
}

func (r *rawFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.OK
	}
	return r.RawFileSystem.Flush(cancel, in)
}

func (r *rawFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.OK
	}
	return r.RawFileSystem.Fsync(cancel, in)
}

func (r *rawFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.OK
	}
	return r.RawFileSystem.FsyncDir(cancel, in)
}

func (r *rawFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.ENOSYS // the kernel keeps locks itself
	}
	return r.RawFileSystem.GetLk(cancel, in, out)
}

func (r *rawFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.SetLk(cancel, in)
}

func (r *rawFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.SetLkw(cancel, in)
}

func (r *rawFS) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.Status(syscall.ENOTTY)
	}
	return r.RawFileSystem.Ioctl(cancel, in, inbuf, out, outbuf)
}

func (r *rawFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.SetAttr(cancel, in, out)
}

func (r *rawFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Mknod(cancel, in, name, out)
}

func (r *rawFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (r *rawFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if r.isRaw(h.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Unlink(cancel, h, name)
}

func (r *rawFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if r.isRaw(h.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Rmdir(cancel, h, name)
}

func (r *rawFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if r.isRaw(in.NodeId) || r.isRaw(in.Newdir) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (r *rawFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if r.isRaw(in.NodeId) || r.isRaw(in.Oldnodeid) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Link(cancel, in, name, out)
}

func (r *rawFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if r.isRaw(h.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (r *rawFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

func (r *rawFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	if r.isRaw(h.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.RemoveXAttr(cancel, h, attr)
}

func (r *rawFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Create(cancel, in, name, out)
}

func (r *rawFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Tmpfile(cancel, in, out)
}

func (r *rawFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if r.isRaw(in.NodeId) {
		return 0, fuse.EROFS
	}
	return r.RawFileSystem.Write(cancel, in, data)
}

func (r *rawFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if r.isRaw(in.NodeId) {
		return 0, fuse.EROFS
	}
	return r.RawFileSystem.Writev(cancel, in, data)
}

func (r *rawFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if r.isRaw(in.NodeId) || r.isRaw(in.NodeIdOut) {
		return 0, fuse.EROFS
	}
	return r.RawFileSystem.CopyFileRange(cancel, in)
}

func (r *rawFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if r.isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Fallocate(cancel, in)
}
