// Package merged computes the merged root filesystem of an image from its
// layers, the way the kernel's overlayfs would show them, but once and in
// memory: lookups afterwards are binary searches in sorted entry ranges and
// reads go straight to the file in its layer.
//
// A layer is anything that can list its entries and open its files (see
// Layer): a snapshot directory (Dir), or another source such as an eStargz
// table of contents. Dir reads overlayfs' own on-disk encoding: a whiteout
// is a character device 0:0 and an opaque directory carries the xattr
// trusted.overlay.opaque="y".
//
// The tree is stored compactly because a daemon serves dozens of images of
// tens of thousands of entries each: one fixed-size record per inode and one
// per name in flat slices without pointers (the garbage collector does not
// scan them), all names in one string, and the rare extras (symlink targets,
// device numbers, xattrs) in a side table. See Tree.Bytes.
package merged

import (
	"sort"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Xattr is one extended attribute of a node.
type Xattr struct {
	Name  string
	Value []byte
}

// Ino identifies one node (inode) of a Tree. Nodes are numbered from 1 (the
// root) in sorted walk order, so numbers are stable for a given set of
// layers. Hardlinked names share one Ino.
type Ino uint32

// RootIno is the root directory of every tree.
const RootIno Ino = 1

// Attr is what stat(2) shows for a node.
type Attr struct {
	// Mode is the full unix mode: S_IFMT type bits, permissions and
	// setuid/setgid/sticky bits.
	Mode     uint32
	Uid, Gid uint32
	// Nlink is, for non-directories, the number of names this node has in
	// the merged tree; for directories 2 + the number of subdirectories.
	Nlink uint32
	Size  int64
	// Mtime is the modification time from the layer. Ctime shows the same:
	// an image's files have no change time of their own (the layer's is the
	// time it was unpacked), and a fixed one keeps tar and rsync output
	// reproducible.
	Mtime unix.Timespec
	Rdev  uint64
}

// IsDir, IsSymlink and IsRegular report the node's type.
func (a Attr) IsDir() bool     { return a.Mode&unix.S_IFMT == unix.S_IFDIR }
func (a Attr) IsSymlink() bool { return a.Mode&unix.S_IFMT == unix.S_IFLNK }
func (a Attr) IsRegular() bool { return a.Mode&unix.S_IFMT == unix.S_IFREG }

// node is one inode: 56 bytes, no pointers.
type node struct {
	mode, uid, gid, nlink uint32
	size                  int64
	mtime                 int64
	mtimeNsec             uint32
	parent                Ino    // directory holding the first name
	name                  uint32 // index into Tree.ents of the first name
	// For directories, ents[kids:kids+nkids] are the entries, sorted by
	// name. For other nodes kids is 1 + an index into Tree.extras, or 0.
	kids, nkids uint32
	layer       uint16
}

// ent is one name in a directory: 12 bytes, no pointers.
type ent struct {
	nameOff uint32 // into Tree.names
	nameLen uint16
	_       uint16
	ino     Ino
}

// extra holds what few nodes have: a symlink target, a device number,
// xattrs. Directories with xattrs keep theirs in dirExtras instead.
type extra struct {
	target string
	rdev   uint64
	xattrs []Xattr
}

// Tree is the merged view of a stack of layers. It is immutable and safe
// for concurrent use.
type Tree struct {
	layers    []Layer
	nodes     []node // nodes[i] is Ino i+1
	ents      []ent
	names     string
	extras    []extra
	dirExtras map[Ino]*extra
}

func (t *Tree) node(i Ino) *node { return &t.nodes[i-1] }

// Len returns the number of distinct nodes (inodes) in the tree.
func (t *Tree) Len() int { return len(t.nodes) }

// Valid reports whether i names a node of t.
func (t *Tree) Valid(i Ino) bool { return i >= 1 && int(i) <= len(t.nodes) }

// Attr returns a node's attributes.
func (t *Tree) Attr(i Ino) Attr {
	n := t.node(i)
	a := Attr{Mode: n.mode, Uid: n.uid, Gid: n.gid, Nlink: n.nlink, Size: n.size,
		Mtime: unix.Timespec{Sec: n.mtime, Nsec: int64(n.mtimeNsec)}}
	if x := t.extra(i); x != nil {
		a.Rdev = x.rdev
	}
	return a
}

// Mode returns a node's mode (type and permission bits).
func (t *Tree) Mode(i Ino) uint32 { return t.node(i).mode }

func (t *Tree) extra(i Ino) *extra {
	n := t.node(i)
	if n.mode&unix.S_IFMT == unix.S_IFDIR {
		return t.dirExtras[i]
	}
	if n.kids == 0 {
		return nil
	}
	return &t.extras[n.kids-1]
}

// Target returns the target of a symlink ("" for other nodes).
func (t *Tree) Target(i Ino) string {
	if x := t.extra(i); x != nil {
		return x.target
	}
	return ""
}

// Xattrs returns every xattr of a node except overlayfs' private ones; nil
// for the many nodes that have none. The slice is shared: do not modify it.
func (t *Tree) Xattrs(i Ino) []Xattr {
	if x := t.extra(i); x != nil {
		return x.xattrs
	}
	return nil
}

// Xattr returns the value of one xattr of a node.
func (t *Tree) Xattr(i Ino, name string) ([]byte, bool) {
	for _, x := range t.Xattrs(i) {
		if x.Name == name {
			return x.Value, true
		}
	}
	return nil, false
}

// Dirent is one name in a directory.
type Dirent struct {
	Name string
	Ino  Ino
}

func (t *Tree) entName(e *ent) string {
	return t.names[e.nameOff : e.nameOff+uint32(e.nameLen)]
}

func (t *Tree) dirEnts(dir Ino) []ent {
	n := t.node(dir)
	if n.mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	return t.ents[n.kids : n.kids+n.nkids]
}

// NumEntries returns the number of names in a directory (0 otherwise).
func (t *Tree) NumEntries(dir Ino) int { return len(t.dirEnts(dir)) }

// Entry returns the k-th name of a directory, in sorted order. The name
// shares the tree's memory: it costs no allocation.
func (t *Tree) Entry(dir Ino, k int) Dirent {
	e := &t.dirEnts(dir)[k]
	return Dirent{Name: t.entName(e), Ino: e.ino}
}

// Child looks up one name in a directory.
func (t *Tree) Child(dir Ino, name string) (Ino, bool) {
	es := t.dirEnts(dir)
	k := sort.Search(len(es), func(k int) bool { return t.entName(&es[k]) >= name })
	if k < len(es) && t.entName(&es[k]) == name {
		return es[k].ino, true
	}
	return 0, false
}

// Lookup resolves a slash-separated path relative to the root ("" and "/"
// name the root). Symlinks are not followed.
func (t *Tree) Lookup(path string) (Ino, bool) {
	i := RootIno
	for _, part := range strings.Split(path, "/") {
		if part == "" || part == "." {
			continue
		}
		c, ok := t.Child(i, part)
		if !ok {
			return 0, false
		}
		i = c
	}
	return i, true
}

// Path returns a node's path in the merged tree by its first name, "" for
// the root and "usr/bin/ls" below it (the form Layer.Open takes).
func (t *Tree) Path(i Ino) string {
	var parts []string
	for c := i; c != RootIno; {
		n := t.node(c)
		parts = append(parts, t.entName(&t.ents[n.name]))
		c = n.parent
	}
	var b strings.Builder
	for k := len(parts) - 1; k >= 0; k-- {
		if k != len(parts)-1 {
			b.WriteByte('/')
		}
		b.WriteString(parts[k])
	}
	return b.String()
}

// Layer returns the layer a node's data and attributes come from.
func (t *Tree) Layer(i Ino) Layer { return t.layers[t.node(i).layer] }

// Bytes estimates the memory the tree holds: its slices, names and extras.
func (t *Tree) Bytes() int64 {
	b := int64(len(t.nodes))*int64(unsafe.Sizeof(node{})) +
		int64(len(t.ents))*int64(unsafe.Sizeof(ent{})) +
		int64(len(t.names)) + int64(len(t.extras))*int64(unsafe.Sizeof(extra{}))
	count := func(x *extra) {
		b += int64(len(x.target))
		for _, a := range x.xattrs {
			b += int64(len(a.Name)+len(a.Value)) + int64(unsafe.Sizeof(a))
		}
	}
	for k := range t.extras {
		count(&t.extras[k])
	}
	for _, x := range t.dirExtras {
		b += 64 + int64(unsafe.Sizeof(*x))
		count(x)
	}
	return b
}

// HasXattr reports whether any node has an xattr whose name matches.
func (t *Tree) HasXattr(match func(name string) bool) bool {
	find := func(x *extra) bool {
		for _, a := range x.xattrs {
			if match(a.Name) {
				return true
			}
		}
		return false
	}
	for k := range t.extras {
		if find(&t.extras[k]) {
			return true
		}
	}
	for _, x := range t.dirExtras {
		if find(x) {
			return true
		}
	}
	return false
}

// Parent returns the directory holding a node's first name (the root's
// parent is the root).
func (t *Tree) Parent(i Ino) Ino {
	if i == RootIno {
		return RootIno
	}
	return t.node(i).parent
}
