package fusefs

import (
	"context"
	"io"
	"os"
	"syscall"

	"github.com/casfs/casfs/layers/merged"
	gfs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// mnode is one node of a rootfs tree that the kernel knows. Everything but
// file data comes from the in-memory merged.Tree, so lookups, stat and
// xattr queries never touch the disk; file data comes from the node's
// layer. An mnode lives only while the kernel holds the inode: go-fuse
// drops it on FORGET. The kernel forgets a directory only after everything
// below it, so the FORGET of a tree's root means it holds none of its
// nodes: then the tree is dropped too.
type mnode struct {
	gfs.Inode
	rt *rtree
	i  merged.Ino
}

var (
	_ gfs.NodeLookuper       = (*mnode)(nil)
	_ gfs.NodeOpendirHandler = (*mnode)(nil)
	_ gfs.NodeGetattrer      = (*mnode)(nil)
	_ gfs.NodeReadlinker     = (*mnode)(nil)
	_ gfs.NodeOpener         = (*mnode)(nil)
	_ gfs.NodeGetxattrer     = (*mnode)(nil)
	_ gfs.NodeListxattrer    = (*mnode)(nil)
	_ gfs.NodeOnForgetter    = (*mnode)(nil)
)

// attr fills the attributes of node i of rt.
func (rt *rtree) attr(i merged.Ino, a *fuse.Attr) {
	n := rt.t.Attr(i)
	a.Ino = rt.base | uint64(i)
	a.Mode = n.Mode
	a.Nlink = n.Nlink
	a.Owner = fuse.Owner{Uid: n.Uid, Gid: n.Gid}
	a.Size = uint64(n.Size)
	a.Blocks = (uint64(n.Size) + 511) / 512
	a.Blksize = 4096
	a.Rdev = encodeDev(n.Rdev)
	a.Mtime, a.Mtimensec = uint64(n.Mtime.Sec), uint32(n.Mtime.Nsec)
	a.Atime, a.Atimensec = a.Mtime, a.Mtimensec
	a.Ctime, a.Ctimensec = a.Mtime, a.Mtimensec
}

// encodeDev turns a stat(2) device number into the 32-bit encoding the
// FUSE protocol carries (the kernel's new_encode_dev).
func encodeDev(rdev uint64) uint32 {
	major, minor := unix.Major(rdev), unix.Minor(rdev)
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12
}

func (m *mnode) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	m.rt.attr(m.i, &out.Attr)
	out.SetTimeout(m.rt.fs.opts.ImmutableTimeout)
	return 0
}

// child returns the inode of node i of rt below parent. Hardlinked names
// share an inode number, and go-fuse hands back the Inode it already has.
func (rt *rtree) child(ctx context.Context, parent *gfs.Inode, i merged.Ino, out *fuse.EntryOut) *gfs.Inode {
	ch := rt.fs.newChild(ctx, parent, &mnode{rt: rt, i: i}, rt.t.Mode(i), rt.base|uint64(i))
	rt.attr(i, &out.Attr)
	imm := rt.fs.opts.ImmutableTimeout
	rt.fs.setTimeouts(out, imm, imm)
	return ch
}

func (m *mnode) OnForget() {
	if m.i == merged.RootIno {
		m.rt.drop()
	}
}

func (m *mnode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	c, ok := m.rt.t.Child(m.i, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	return m.rt.child(ctx, &m.Inode, c, out), 0
}

func (m *mnode) OpendirHandle(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	return &treeDirHandle{m: m}, dirFlags, 0
}

// treeDirHandle lists a tree directory straight from the tree: names share
// the tree's memory, so a listing allocates nothing per entry.
type treeDirHandle struct {
	m    *mnode
	pos  int
	last merged.Dirent // the entry Readdirent returned last
	de   fuse.DirEntry
}

var (
	_ gfs.FileReaddirenter = (*treeDirHandle)(nil)
	_ gfs.FileSeekdirer    = (*treeDirHandle)(nil)
	_ gfs.FileLookuper     = (*treeDirHandle)(nil)
)

func (d *treeDirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	rt := d.m.rt
	if d.pos >= rt.t.NumEntries(d.m.i) {
		return nil, 0
	}
	d.last = rt.t.Entry(d.m.i, d.pos)
	d.pos++
	d.de = fuse.DirEntry{Name: d.last.Name, Mode: rt.t.Mode(d.last.Ino), Ino: rt.base | uint64(d.last.Ino), Off: uint64(d.pos)}
	return &d.de, 0
}

// Lookup answers READDIRPLUS for the entry just listed without searching
// the directory again.
func (d *treeDirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	if name != d.last.Name || d.last.Ino == 0 {
		return d.m.Lookup(ctx, name, out)
	}
	return d.m.rt.child(ctx, &d.m.Inode, d.last.Ino, out), 0
}

func (d *treeDirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(d.m.rt.t.NumEntries(d.m.i)) {
		return syscall.EINVAL
	}
	d.pos = int(off)
	return 0
}

func (m *mnode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if m.rt.t.Mode(m.i)&unix.S_IFMT != unix.S_IFLNK {
		return nil, syscall.EINVAL
	}
	return []byte(m.rt.t.Target(m.i)), 0
}

func (m *mnode) Open(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	t := m.rt.t
	if t.Mode(m.i)&unix.S_IFMT != unix.S_IFREG {
		return nil, 0, syscall.EINVAL
	}
	p := t.Path(m.i)
	c, err := t.Layer(m.i).Open(ctx, p)
	if err != nil {
		return nil, 0, m.rt.fs.errno("open rootfs file "+p, err)
	}
	if f, ok := c.(*os.File); ok {
		return m.rt.fs.openHandle(f)
	}
	return &contentHandle{c: c}, fileFlags, 0
}

// contentHandle serves a file whose layer is not a local directory (a
// lazily fetched layer): reads go through the daemon.
type contentHandle struct {
	c merged.Content
}

var (
	_ gfs.FileReader   = (*contentHandle)(nil)
	_ gfs.FileReleaser = (*contentHandle)(nil)
)

func (h *contentHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.c.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *contentHandle) Release(ctx context.Context) syscall.Errno {
	h.c.Close()
	return 0
}

// Getxattr answers from memory. The kernel does not cache xattrs, so ls -l
// would cost two round trips per file (security.selinux and a POSIX ACL).
// For those names, when the whole tree has none, the answer is EOPNOTSUPP
// rather than ENODATA: ls (and libacl/libselinux users that follow the same
// convention) then remember that the device has no labels or ACLs and stop
// asking, while the kernel, which only remembers ENOSYS, keeps sending every
// other query, so real xattrs such as security.capability still show.
func (m *mnode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	m.rt.fs.xattrCalls.Add(1)
	v, ok := m.rt.t.Xattr(m.i, attr)
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
	m.rt.fs.xattrCalls.Add(1)
	xs := m.rt.t.Xattrs(m.i)
	size := 0
	for _, x := range xs {
		size += len(x.Name) + 1
	}
	if len(dest) == 0 {
		return uint32(size), 0
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, x := range xs {
		off += copy(dest[off:], x.Name)
		dest[off] = 0
		off++
	}
	return uint32(size), 0
}
