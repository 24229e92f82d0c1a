// Package merged computes the merged root filesystem of an image from its
// layer snapshot directories, the way the kernel's overlayfs would show
// them, but once and in memory: lookups afterwards are binary searches in
// sorted child slices and reads go straight to the file in its layer.
//
// Layer directories use overlayfs' own on-disk encoding: a whiteout is a
// character device 0:0 and an opaque directory carries the xattr
// trusted.overlay.opaque="y".
package merged

import (
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Xattr is one extended attribute of a node, as read from its backing file.
type Xattr struct {
	Name  string
	Value []byte
}

// Node is one inode of the merged tree. Hardlinked names share one Node.
// Fields are kept small on purpose: a daemon holds ten images of a few
// thousand files each, so every byte here is multiplied by tens of thousands.
type Node struct {
	// Name is the node's first name in the merged tree (in sorted walk
	// order); hardlinks may be reachable under other names too.
	Name string
	// Mode is the full unix mode: S_IFMT type bits, permissions and
	// setuid/setgid/sticky bits.
	Mode     uint32
	Uid, Gid uint32
	// Nlink is, for non-directories, the number of names this node has in
	// the merged tree; for directories 2 + the number of subdirectories.
	Nlink uint32
	Size  int64
	Mtime unix.Timespec
	Ctime unix.Timespec
	Rdev  uint64
	// Ino is stable for a given set of layers: nodes are numbered in sorted
	// walk order, the root is 1.
	Ino uint64
	// Xattrs holds every xattr of the backing file except trusted.overlay.*;
	// nil for the many files that have none.
	Xattrs []Xattr
	// Target is the symlink target (symlinks only).
	Target string

	children []Dirent // directories only, sorted by name
	parent   *Node    // directory holding Name
	layer    uint16   // index into Tree.layers of the layer the node comes from
}

// Dirent is one name in a directory.
type Dirent struct {
	Name string
	Node *Node
}

// Tree is the merged view of a stack of layers.
type Tree struct {
	Root   *Node
	layers []string // layer directories ("" for entry layers)
	files  []Files  // content of entry layers (nil for layer directories)
	nodes  int
}

// IsDir reports whether n is a directory.
func (n *Node) IsDir() bool { return n.Mode&unix.S_IFMT == unix.S_IFDIR }

// IsSymlink reports whether n is a symbolic link.
func (n *Node) IsSymlink() bool { return n.Mode&unix.S_IFMT == unix.S_IFLNK }

// IsRegular reports whether n is a regular file.
func (n *Node) IsRegular() bool { return n.Mode&unix.S_IFMT == unix.S_IFREG }

// Children returns the sorted entries of a directory (nil otherwise). The
// slice is shared: callers must not modify it.
func (n *Node) Children() []Dirent { return n.children }

// Child looks up one name in a directory.
func (n *Node) Child(name string) (*Node, bool) {
	c := n.children
	i := sort.Search(len(c), func(i int) bool { return c[i].Name >= name })
	if i < len(c) && c[i].Name == name {
		return c[i].Node, true
	}
	return nil, false
}

// Xattr returns the value of one xattr of n.
func (n *Node) Xattr(name string) ([]byte, bool) {
	for _, x := range n.Xattrs {
		if x.Name == name {
			return x.Value, true
		}
	}
	return nil, false
}

// Lookup resolves a slash-separated path relative to the root ("" and "/"
// name the root). Symlinks are not followed.
func (t *Tree) Lookup(path string) (*Node, bool) {
	n := t.Root
	for _, part := range strings.Split(path, "/") {
		if part == "" || part == "." {
			continue
		}
		if !n.IsDir() {
			return nil, false
		}
		c, ok := n.Child(part)
		if !ok {
			return nil, false
		}
		n = c
	}
	return n, true
}

// Len returns the number of distinct nodes (inodes) in the tree.
func (t *Tree) Len() int { return t.nodes }

// Backing returns the path of the file that holds n's data and metadata in
// its layer directory. It is computed from the parent chain rather than
// stored, which saves a long string per node.
func (t *Tree) Backing(n *Node) string {
	var parts []string
	for c := n; c.parent != nil; c = c.parent {
		parts = append(parts, c.Name)
	}
	var b strings.Builder
	b.WriteString(t.layers[n.layer])
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteByte('/')
		b.WriteString(parts[i])
	}
	return b.String()
}

// Path returns n's path in the merged tree, starting with "/", by its first name.
func (t *Tree) Path(n *Node) string {
	p := strings.TrimPrefix(t.Backing(n), t.layers[n.layer])
	if p == "" {
		return "/"
	}
	return p
}
