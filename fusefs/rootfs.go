package fusefs

import (
	"github.com/casfs/casfs/layers/merged"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
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
