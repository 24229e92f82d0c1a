package merged

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// bnode is a node while the tree is being built: directories keep their
// entries in a map so that applying a layer is a map operation; finish
// packs them into the Tree's flat slices. Hardlinked names share a bnode.
type bnode struct {
	attr   Attr
	target string
	xattrs []Xattr
	layer  uint16
	kids   map[string]*bnode // directories only
	ino    Ino               // set by finish
}

type linkKey struct {
	layer uint16
	link  uint64
}

// builder applies the entries of the layers, lowest first.
type builder struct {
	root  *bnode
	links map[linkKey]*bnode
	// The last directory an entry was added to: a walk lists a
	// directory's entries together, so most parent lookups hit it.
	lastDir  string
	lastNode *bnode
	// Upper bounds of the nodes and names the tree will have, so that
	// finish allocates its slices once: fresh memory is the main cost of
	// building a tree (on some VMs each new page costs tens of µs).
	nodes, names, nameBytes int
}

// Build merges the given layer directories, lowest layer first (see Dir).
func Build(ctx context.Context, layerDirs []string) (*Tree, error) {
	layers := make([]Layer, len(layerDirs))
	for i, d := range layerDirs {
		layers[i] = Dir(d)
	}
	return BuildLayers(ctx, layers)
}

// BuildLayers merges layers, lowest first, applying the overlayfs rules: an
// upper entry hides a lower one; a whiteout deletes it; an opaque directory
// hides the lower directory's entries; a non-directory replaces a lower
// directory and a directory replaces a lower non-directory. Each layer is
// walked once.
func BuildLayers(ctx context.Context, layers []Layer) (*Tree, error) {
	if len(layers) == 0 {
		return nil, fmt.Errorf("build merged tree: no layers")
	}
	if len(layers) > math.MaxUint16 {
		return nil, fmt.Errorf("build merged tree: %d layers is too many", len(layers))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops a walk ahead when applying fails
	b := &builder{links: map[linkKey]*bnode{}}
	var next *walkAhead
	for i, l := range layers {
		b.lastDir, b.lastNode = "", nil
		cur := next
		next = nil
		if i+1 < len(layers) && ReadsDisk(layers[i+1]) {
			next = startWalkAhead(ctx, layers[i+1])
		}
		apply := func(e *Entry) error { return b.apply(e, uint16(i)) }
		var err error
		if cur == nil {
			err = l.Walk(ctx, apply)
		} else {
			err = cur.each(apply)
		}
		if err != nil {
			return nil, fmt.Errorf("build merged tree: layer %d: %w", i, err)
		}
		if b.root == nil {
			return nil, fmt.Errorf("build merged tree: layer %d has no root directory", i)
		}
	}
	t := &Tree{layers: append([]Layer(nil), layers...)}
	if err := t.finish(b); err != nil {
		return nil, fmt.Errorf("build merged tree: %w", err)
	}
	return t, nil
}

// walkAheadEntries bounds how far the next layer's walk runs ahead of the
// layer being applied (about 150 bytes an entry).
const walkAheadEntries = 8192

// ReadsDisk reports whether walking l waits for the disk (a snapshot
// directory) rather than reading memory (a TOC): only then does a walk
// ahead pay for its copies of the entries.
func ReadsDisk(l Layer) bool {
	_, ok := l.(Dir)
	return ok
}

// walkAhead walks a layer in the background while the layer below it is
// applied: on a cold cache a walk mostly waits for the disk (directory
// blocks and inodes), and two walks overlap those waits.
type walkAhead struct {
	ents chan Entry
	err  error // set before ents is closed
}

func startWalkAhead(ctx context.Context, l Layer) *walkAhead {
	w := &walkAhead{ents: make(chan Entry, walkAheadEntries)}
	go func() {
		defer close(w.ents)
		w.err = l.Walk(ctx, func(e *Entry) error {
			c := *e // the layer may reuse e and its slices
			c.Xattrs = nil
			for _, x := range e.Xattrs {
				c.Xattrs = append(c.Xattrs, Xattr{Name: x.Name, Value: append([]byte(nil), x.Value...)})
			}
			select {
			case w.ents <- c:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return w
}

// each hands the walked entries to fn in order, then the walk's error.
func (w *walkAhead) each(fn func(*Entry) error) error {
	for e := range w.ents {
		if err := fn(&e); err != nil {
			return err // the caller cancels the walk
		}
	}
	return w.err
}

func (b *builder) newBnode(e *Entry, layer uint16) *bnode {
	b.nodes++
	n := &bnode{attr: e.Attr, target: e.Target, layer: layer}
	n.attr.Nlink = 0
	if !n.attr.IsDir() && !n.attr.IsSymlink() {
		n.target = ""
	}
	if n.attr.Mode&unix.S_IFMT != unix.S_IFCHR && n.attr.Mode&unix.S_IFMT != unix.S_IFBLK {
		n.attr.Rdev = 0
	}
	n.setXattrs(e.Xattrs)
	if n.attr.IsDir() {
		n.kids = map[string]*bnode{}
	}
	return n
}

// setXattrs keeps a copy: the layer may reuse the Entry.
func (n *bnode) setXattrs(xs []Xattr) {
	n.xattrs = nil
	for _, x := range xs {
		n.xattrs = append(n.xattrs, Xattr{Name: x.Name, Value: append([]byte(nil), x.Value...)})
	}
}

func (b *builder) apply(e *Entry, layer uint16) error {
	if e.Path == "" {
		if !e.Attr.IsDir() || e.Whiteout {
			return fmt.Errorf("layer root is not a directory")
		}
		if b.root == nil {
			b.root = b.newBnode(e, layer)
		} else {
			// The topmost layer's root attributes show.
			b.root.attr, b.root.layer = e.Attr, layer
			b.root.setXattrs(e.Xattrs)
		}
		return nil
	}
	if b.root == nil {
		return fmt.Errorf("entry %s comes before the layer root", e.Path)
	}
	dirPath, name := "", e.Path
	if k := strings.LastIndexByte(e.Path, '/'); k >= 0 {
		dirPath, name = e.Path[:k], e.Path[k+1:]
	}
	if !validName(name) {
		return fmt.Errorf("entry %q: invalid name", e.Path)
	}
	parent := b.dir(dirPath, layer)
	if e.Whiteout {
		delete(parent.kids, name)
		return nil
	}
	b.names++
	b.nameBytes += len(name)
	if e.Attr.IsDir() {
		lower := parent.kids[name]
		if lower != nil && lower.attr.IsDir() && !e.Opaque {
			// A merged directory: the upper attributes show.
			lower.attr, lower.layer = e.Attr, layer
			lower.setXattrs(e.Xattrs)
			return nil
		}
		parent.kids[name] = b.newBnode(e, layer)
		return nil
	}
	if e.Link != 0 {
		k := linkKey{layer, e.Link}
		if n := b.links[k]; n != nil {
			parent.kids[name] = n
			return nil
		}
		n := b.newBnode(e, layer)
		b.links[k] = n
		parent.kids[name] = n
		return nil
	}
	parent.kids[name] = b.newBnode(e, layer)
	return nil
}

// dir returns the merged directory at path, making the missing ones: a
// layer may list a file without its parent directories (tar streams do).
func (b *builder) dir(path string, layer uint16) *bnode {
	if path == b.lastDir && b.lastNode != nil {
		return b.lastNode
	}
	d := b.root
	if path != "" {
		for _, part := range strings.Split(path, "/") {
			c := d.kids[part]
			if c == nil || !c.attr.IsDir() {
				c = &bnode{attr: Attr{Mode: unix.S_IFDIR | 0o755, Mtime: d.attr.Mtime}, layer: layer, kids: map[string]*bnode{}}
				d.kids[part] = c
				b.nodes++
				b.names++
				b.nameBytes += len(part)
			}
			d = c
		}
	}
	b.lastDir, b.lastNode = path, d
	return d
}

func validName(n string) bool {
	return n != "" && n != "." && n != ".." && len(n) <= 255 && !strings.ContainsAny(n, "/\x00")
}

// finish packs the builder tree: nodes numbered in sorted walk order (the
// root is 1), each directory's entries contiguous and sorted, each distinct
// name stored once, hardlinks sharing one node with their link count in the
// merged tree.
func (t *Tree) finish(bld *builder) error {
	root := bld.root
	t.nodes = make([]node, 0, bld.nodes)
	t.ents = make([]ent, 0, bld.names)
	// Names repeat across directories: half of them distinct is a guess.
	nameOff := make(map[string]uint32, bld.names/2)
	var names strings.Builder
	names.Grow(bld.nameBytes / 2)
	t.dirExtras = map[Ino]*extra{}
	var err error

	add := func(b *bnode, parent Ino, entIdx uint32) Ino {
		if b.ino != 0 {
			t.nodes[b.ino-1].nlink++
			return b.ino
		}
		if len(t.nodes) >= math.MaxUint32-1 {
			err = fmt.Errorf("more than %d entries", math.MaxUint32-1)
			return 0
		}
		t.nodes = append(t.nodes, node{
			mode: b.attr.Mode, uid: b.attr.Uid, gid: b.attr.Gid, nlink: 1, size: b.attr.Size,
			mtime: b.attr.Mtime.Sec, mtimeNsec: uint32(b.attr.Mtime.Nsec),
			parent: parent, name: entIdx, layer: b.layer,
		})
		i := Ino(len(t.nodes))
		b.ino = i
		if b.target != "" || b.attr.Rdev != 0 || len(b.xattrs) > 0 {
			x := extra{target: b.target, rdev: b.attr.Rdev, xattrs: b.xattrs}
			if b.kids != nil {
				t.dirExtras[i] = &x
			} else {
				t.extras = append(t.extras, x)
				t.nodes[i-1].kids = uint32(len(t.extras))
			}
		}
		return i
	}
	// The names of the directories being walked, stacked in one slice: a
	// directory's keys stay valid when a deeper append moves the stack.
	var stack []string
	var walk func(b *bnode, i Ino)
	walk = func(b *bnode, i Ino) {
		base := len(stack)
		for k := range b.kids {
			stack = append(stack, k)
		}
		keys := stack[base:len(stack):len(stack)]
		defer func() { stack = stack[:base] }()
		sort.Strings(keys)
		first := uint32(len(t.ents))
		n := &t.nodes[i-1]
		n.kids, n.nkids, n.nlink = first, uint32(len(keys)), 2
		for _, k := range keys {
			off, ok := nameOff[k]
			if !ok {
				off = uint32(names.Len())
				names.WriteString(k)
				nameOff[k] = off
			}
			t.ents = append(t.ents, ent{nameOff: off, nameLen: uint16(len(k))})
		}
		for j, k := range keys {
			c := b.kids[k]
			ci := add(c, i, first+uint32(j))
			if err != nil {
				return
			}
			t.ents[first+uint32(j)].ino = ci
			if c.kids != nil {
				t.nodes[i-1].nlink++
				walk(c, ci) // directories have one name: each is walked once
				if err != nil {
					return
				}
			}
		}
	}
	add(root, 0, 0)
	walk(root, RootIno)
	if err != nil {
		return err
	}
	if names.Len() > math.MaxUint32 {
		return fmt.Errorf("names take more than 4 GiB")
	}
	t.names = names.String()
	return nil
}
