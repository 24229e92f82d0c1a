package merged

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	opaqueXattr  = "trusted.overlay.opaque"
	overlayXattr = "trusted.overlay."
)

// bnode is a node while the tree is being built: directories keep their
// children in a map so that applying a layer is a map operation; Build turns
// them into compact Nodes with sorted slices at the end.
type bnode struct {
	n    *Node
	kids map[string]*bnode
	// dev and ino identify the backing inode of a non-directory with more
	// than one link, so that hardlinks can share one Node.
	dev, ino uint64
}

type linkKey struct {
	layer    uint16
	dev, ino uint64
}

// Build merges the given layer directories, lowest layer first, applying the
// overlayfs rules: an upper entry hides a lower one; a whiteout deletes it;
// an opaque directory hides the lower directory's children; a non-directory
// replaces a lower directory and a directory replaces a lower non-directory.
// Each layer directory is walked once.
func Build(ctx context.Context, layerDirs []string) (*Tree, error) {
	ls := make([]Layer, len(layerDirs))
	for i, d := range layerDirs {
		ls[i] = Layer{Dir: d}
	}
	return BuildLayers(ctx, ls)
}

// applyDirLayer applies one layer directory onto root (nil for the lowest
// layer) and returns the new root.
func applyDirLayer(ctx context.Context, root *bnode, dir string, layer uint16) (*bnode, error) {
	n, err := statNode(dir, layer)
	if err != nil {
		return nil, err
	}
	if !n.n.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	n.n.Xattrs = dropOpaque(n.n.Xattrs)
	if root == nil {
		root = &bnode{n: n.n, kids: map[string]*bnode{}}
	} else {
		root.n = n.n // the topmost layer's root attributes show
	}
	if err := applyDir(ctx, root, dir, layer); err != nil {
		return nil, err
	}
	return root, nil
}

// applyDir applies the entries of one directory of one layer onto the merged
// directory m.
func applyDir(ctx context.Context, m *bnode, dir string, layer uint16) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("read directory %s: %w", dir, err)
	}
	for _, name := range names {
		p := dir + "/" + name
		c, err := statNode(p, layer)
		if err != nil {
			return err
		}
		if c.n.Mode&unix.S_IFMT == unix.S_IFCHR && c.n.Rdev == 0 {
			delete(m.kids, name) // whiteout
			continue
		}
		if !c.n.IsDir() {
			m.kids[name] = c
			continue
		}
		lower, ok := m.kids[name]
		if ok && lower.n.IsDir() && !c.opaque() {
			lower.n = c.n // merged directory: the upper attributes show
		} else {
			c.kids = map[string]*bnode{}
			m.kids[name] = c
			lower = c
		}
		lower.n.Xattrs = dropOpaque(lower.n.Xattrs)
		if err := applyDir(ctx, lower, p, layer); err != nil {
			return err
		}
	}
	return nil
}

func (b *bnode) opaque() bool {
	v, ok := b.n.Xattr(opaqueXattr)
	return ok && string(v) == "y"
}

// dropOpaque removes the opaque marker, which statNode kept only so that
// applyDir could see it.
func dropOpaque(xs []Xattr) []Xattr {
	out := xs[:0]
	for _, x := range xs {
		if x.Name != opaqueXattr {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// statNode reads one entry of a layer: its attributes, link target and
// xattrs.
func statNode(p string, layer uint16) (*bnode, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	n := &Node{
		Mode:  st.Mode,
		Uid:   st.Uid,
		Gid:   st.Gid,
		Size:  st.Size,
		Mtime: st.Mtim,
		Ctime: st.Ctim,
		Rdev:  st.Rdev,
		layer: layer,
	}
	b := &bnode{n: n}
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFCHR && st.Rdev == 0 {
		return b, nil // whiteout: nothing else matters
	}
	if typ == unix.S_IFLNK {
		t, err := os.Readlink(p)
		if err != nil {
			return nil, fmt.Errorf("read link %s: %w", p, err)
		}
		n.Target = t
	}
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		b.dev, b.ino = st.Dev, st.Ino
	}
	xs, err := readXattrs(p, typ == unix.S_IFDIR)
	if err != nil {
		return nil, err
	}
	n.Xattrs = xs
	return b, nil
}

// readXattrs returns every xattr of p except overlayfs' private ones; for
// directories the opaque marker is kept for applyDir to read.
func readXattrs(p string, dir bool) ([]Xattr, error) {
	names, err := listXattrs(p)
	if err != nil {
		return nil, err
	}
	var xs []Xattr
	for _, name := range names {
		if strings.HasPrefix(name, overlayXattr) && !(dir && name == opaqueXattr) {
			continue
		}
		v, err := getXattr(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		xs = append(xs, Xattr{Name: name, Value: v})
	}
	return xs, nil
}

func listXattrs(p string) ([]string, error) {
	buf := make([]byte, 256)
	for {
		sz, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err = unix.Llistxattr(p, nil)
			if err != nil {
				return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
			}
			buf = make([]byte, sz+64)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
		}
		if sz == 0 {
			return nil, nil
		}
		var names []string
		for _, b := range bytes.Split(buf[:sz], []byte{0}) {
			if len(b) > 0 {
				names = append(names, string(b))
			}
		}
		return names, nil
	}
}

func getXattr(p, name string) ([]byte, error) {
	buf := make([]byte, 128)
	for {
		sz, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err = unix.Lgetxattr(p, name, nil)
			if err != nil {
				return nil, fmt.Errorf("get xattr %s of %s: %w", name, p, err)
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %s of %s: %w", name, p, err)
		}
		return append([]byte(nil), buf[:sz]...), nil
	}
}

// finish turns the builder tree into compact Nodes: sorted child slices,
// parent links, shared Nodes for hardlinks with their link count in the
// merged tree, and inode numbers in sorted walk order.
func (t *Tree) finish(root *bnode) *Node {
	links := map[linkKey]*Node{}
	var ino uint64
	var walk func(b *bnode, parent *Node, name string) *Node
	walk = func(b *bnode, parent *Node, name string) *Node {
		n := b.n
		if b.ino != 0 {
			k := linkKey{n.layer, b.dev, b.ino}
			if first, ok := links[k]; ok {
				first.Nlink++
				return first
			}
			links[k] = n
		}
		ino++
		n.Ino = ino
		n.Name = name
		n.parent = parent
		n.Nlink = 1
		if b.kids == nil {
			return n
		}
		names := make([]string, 0, len(b.kids))
		for k := range b.kids {
			names = append(names, k)
		}
		sort.Strings(names)
		n.children = make([]Dirent, len(names))
		n.Nlink = 2
		for i, k := range names {
			c := walk(b.kids[k], n, k)
			n.children[i] = Dirent{Name: k, Node: c}
			if c.IsDir() {
				n.Nlink++
			}
		}
		return n
	}
	r := walk(root, nil, "")
	t.nodes = int(ino)
	return r
}
