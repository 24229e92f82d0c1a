package fusefs

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"

	"github.com/casfs/casfs/layers/merged"
	gfs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// mnode is one node of a rootfs tree. Everything but file data comes from
// the in-memory merged.Node, so lookups, stat and xattr queries never touch
// the disk; file data comes from the backing file in its layer snapshot.
type mnode struct {
	gfs.Inode
	fs *FS
	rt *rtree
	n  *merged.Node
}

var (
	_ gfs.NodeLookuper       = (*mnode)(nil)
	_ gfs.NodeOpendirHandler = (*mnode)(nil)
	_ gfs.NodeGetattrer      = (*mnode)(nil)
	_ gfs.NodeReadlinker     = (*mnode)(nil)
	_ gfs.NodeOpener         = (*mnode)(nil)
	_ gfs.NodeGetxattrer     = (*mnode)(nil)
	_ gfs.NodeListxattrer    = (*mnode)(nil)
)

func (m *mnode) attr(a *fuse.Attr) {
	n := m.n
	a.Ino = m.rt.base | n.Ino
	a.Mode = n.Mode
	a.Nlink = n.Nlink
	a.Owner = fuse.Owner{Uid: n.Uid, Gid: n.Gid}
	a.Size = uint64(n.Size)
	a.Blocks = (uint64(n.Size) + 511) / 512
	a.Blksize = 4096
	a.Rdev = encodeDev(n.Rdev)
	a.Mtime, a.Mtimensec = uint64(n.Mtime.Sec), uint32(n.Mtime.Nsec)
	a.Atime, a.Atimensec = a.Mtime, a.Mtimensec
	a.Ctime, a.Ctimensec = uint64(n.Ctime.Sec), uint32(n.Ctime.Nsec)
}

// encodeDev turns a stat(2) device number into the 32-bit encoding the
// FUSE protocol carries (the kernel's new_encode_dev).
func encodeDev(rdev uint64) uint32 {
	major, minor := unix.Major(rdev), unix.Minor(rdev)
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12
}

func (m *mnode) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	m.attr(&out.Attr)
	out.SetTimeout(m.fs.opts.ImmutableTimeout)
	return 0
}

// mergedChild returns the inode of one tree node. Hardlinked names share a
// merged.Node and so an inode number, and go-fuse hands back the same Inode.
func (f *FS) mergedChild(ctx context.Context, parent *gfs.Inode, rt *rtree, n *merged.Node, out *fuse.EntryOut) *gfs.Inode {
	ch := f.newChild(ctx, parent, &mnode{fs: f, rt: rt, n: n}, n.Mode, rt.base|n.Ino)
	if mn, ok := ch.Operations().(*mnode); ok {
		mn.attr(&out.Attr)
	}
	f.setTimeouts(out, f.opts.ImmutableTimeout, f.opts.ImmutableTimeout)
	return ch
}

func (m *mnode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	c, ok := m.n.Child(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	return m.fs.mergedChild(ctx, &m.Inode, m.rt, c, out), 0
}

func (m *mnode) OpendirHandle(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	kids := m.n.Children()
	ents := make([]fuse.DirEntry, len(kids))
	for i, c := range kids {
		ents[i] = fuse.DirEntry{Name: c.Name, Mode: c.Node.Mode, Ino: m.rt.base | c.Node.Ino}
	}
	return newDirHandle(ents), dirFlags, 0
}

func (m *mnode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if !m.n.IsSymlink() {
		return nil, syscall.EINVAL
	}
	return []byte(m.n.Target), 0
}

func (m *mnode) Open(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	if !m.n.IsRegular() {
		return nil, 0, syscall.EINVAL
	}
	if r, ok, err := m.rt.t.OpenLazy(m.n); ok {
		if err != nil {
			return nil, 0, m.fs.errno("open lazy rootfs file", err)
		}
		if f, ok := r.(*os.File); ok {
			return m.fs.openHandle(f) // the layer became local: passthrough
		}
		return &lazyHandle{r: r, fs: m.fs}, fuse.FOPEN_KEEP_CACHE, 0
	}
	p := m.rt.t.Backing(m.n)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		m.fs.log.Error("fuse: open rootfs file failed", "path", p, "err", err)
		return nil, 0, syscall.EIO
	}
	return m.fs.openHandle(f)
}

// Getxattr answers from memory. The kernel does not cache xattrs, so ls -l
// would cost two round trips per file (security.selinux and a POSIX ACL).
// For those names, when the whole tree has none, the answer is EOPNOTSUPP
// rather than ENODATA: ls (and libacl/libselinux users that follow the same
// convention) then remember that the device has no labels or ACLs and stop
// asking, while the kernel, which only remembers ENOSYS, keeps sending every
// other query, so real xattrs such as security.capability still show.
func (m *mnode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	m.fs.xattrCalls.Add(1)
	v, ok := m.n.Xattr(attr)
	if !ok {
		return 0, m.rt.missingXattr(attr)
	}
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (m *mnode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	m.fs.xattrCalls.Add(1)
	size := 0
	for _, x := range m.n.Xattrs {
		size += len(x.Name) + 1
	}
	if len(dest) == 0 {
		return uint32(size), 0
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, x := range m.n.Xattrs {
		off += copy(dest[off:], x.Name)
		dest[off] = 0
		off++
	}
	return uint32(size), 0
}

// lazyHandle reads a file of a layer that is not local yet: each read
// fetches and verifies the chunks it covers (see package lazy).
type lazyHandle struct {
	r  io.ReaderAt
	fs *FS
}

func (h *lazyHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.r.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.fs.errno("lazy read", err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}
