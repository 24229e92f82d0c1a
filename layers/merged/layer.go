package merged

import (
	"context"
	"fmt"
	"io"
	"math"
	"path"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"golang.org/x/sys/unix"
)

// Layer is one layer of a merged tree. Either Dir names an unpacked layer
// snapshot (overlayfs encoding), or Entries lists the layer's entries as a
// tar would (OCI encoding: ".wh.<name>" whiteouts, ".wh..wh..opq" opaque
// markers) and Files serves their contents: a layer known only by its table
// of contents, read lazily.
type Layer struct {
	Dir     string
	Entries []Entry
	Files   Files
}

// Files opens the content of a regular file of an entry layer by its path
// in that layer (relative, no leading slash).
type Files interface {
	OpenFile(path string) (io.ReaderAt, error)
}

// Entry is one entry of an entry layer.
type Entry struct {
	// Path is relative to the layer root, cleaned, "" for the root itself.
	Path string
	// Mode is the full unix mode (S_IFMT type bits and permissions).
	Mode     uint32
	Uid, Gid uint32
	Size     int64
	Mtime    unix.Timespec
	Rdev     uint64
	Target   string // symlink target
	Xattrs   []Xattr
	// Link, when not zero, groups entries that are one inode (hard links):
	// entries of one layer with the same Link share a node.
	Link uint64
}

// DirSize is the size an entry layer's directories show: what a directory
// of an unpacked layer shows on ext4, so that a tree looks the same
// whichever way its layers arrived.
const DirSize = 4096

// OCI whiteout names inside a layer tar.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// eStargz metadata entries at a layer's root: part of the tar stream, not
// of the image's tree, whether the layer is read lazily or unpacked.
var metadataNames = map[string]bool{
	estargz.TOCTarName:         true,
	estargz.PrefetchLandmark:   true,
	estargz.NoPrefetchLandmark: true,
}

// IsEStargzMetadata reports whether a layer path (relative, cleaned) is one
// of the eStargz metadata entries that no rootfs shows.
func IsEStargzMetadata(p string) bool { return metadataNames[p] }

// BuildLayers merges layers, lowest first, with the same rules as Build.
func BuildLayers(ctx context.Context, ls []Layer) (*Tree, error) {
	if len(ls) == 0 {
		return nil, fmt.Errorf("build merged tree: no layers")
	}
	if len(ls) > math.MaxUint16 {
		return nil, fmt.Errorf("build merged tree: %d layers is too many", len(ls))
	}
	t := &Tree{layers: make([]string, len(ls)), files: make([]Files, len(ls))}
	var root *bnode
	for i, l := range ls {
		var err error
		if l.Files == nil {
			t.layers[i] = l.Dir
			root, err = applyDirLayer(ctx, root, l.Dir, uint16(i))
		} else {
			t.files[i] = l.Files
			root, err = applyEntries(ctx, root, l.Entries, uint16(i))
		}
		if err != nil {
			return nil, fmt.Errorf("build merged tree: layer %d: %w", i, err)
		}
	}
	t.Root = t.finish(root)
	return t, nil
}

// applyEntries applies an entry layer onto root (nil for the lowest layer).
// Whiteouts and opaque markers only ever hide lower layers, so they are
// applied first, then the entries, parents before children.
func applyEntries(ctx context.Context, root *bnode, ents []Entry, layer uint16) (*bnode, error) {
	if root == nil {
		root = &bnode{n: &Node{Mode: unix.S_IFDIR | 0o755, Size: DirSize, layer: layer}, kids: map[string]*bnode{}}
	}
	for _, e := range ents {
		if err := checkEntryPath(e.Path); err != nil {
			return nil, err
		}
		dir, base := path.Split(e.Path)
		switch {
		case base == opaqueMarker:
			if d := lookupDir(root, dir); d != nil {
				d.kids = map[string]*bnode{}
			}
		case strings.HasPrefix(base, whiteoutPrefix):
			if d := lookupDir(root, dir); d != nil {
				delete(d.kids, base[len(whiteoutPrefix):])
			}
		}
	}
	links := map[uint64]*bnode{}
	for i, e := range ents {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		_, base := path.Split(e.Path)
		if strings.HasPrefix(base, whiteoutPrefix) {
			continue
		}
		n := &Node{Mode: e.Mode, Uid: e.Uid, Gid: e.Gid, Size: e.Size, Mtime: e.Mtime, Ctime: e.Mtime,
			Rdev: e.Rdev, Target: e.Target, Xattrs: e.Xattrs, layer: layer}
		if e.Path == "" {
			if !n.IsDir() {
				return nil, fmt.Errorf("entry for the root is not a directory")
			}
			root.n = n
			continue
		}
		parent := makeDirs(root, path.Dir(e.Path), layer)
		if n.IsDir() {
			if lower, ok := parent.kids[base]; ok && lower.n.IsDir() {
				lower.n = n // merged directory: the upper attributes show
				continue
			}
			parent.kids[base] = &bnode{n: n, kids: map[string]*bnode{}}
			continue
		}
		b := &bnode{n: n}
		if e.Link != 0 {
			if first, ok := links[e.Link]; ok {
				b.n = first.n
			} else {
				links[e.Link] = b
			}
			// A synthetic identity: finish shares one Node per (layer, dev, ino).
			b.dev, b.ino = math.MaxUint64, e.Link
		}
		parent.kids[base] = b
	}
	return root, nil
}

// checkEntryPath refuses names that are not clean relative paths: a table
// of contents is untrusted input.
func checkEntryPath(p string) error {
	if p == "" {
		return nil
	}
	if strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("entry name %q is not a clean relative path", p)
	}
	return nil
}

// lookupDir follows dir ("a/b/" or "") from root through directories only.
func lookupDir(root *bnode, dir string) *bnode {
	d := root
	for _, part := range strings.Split(strings.Trim(dir, "/"), "/") {
		if part == "" {
			continue
		}
		c, ok := d.kids[part]
		if !ok || c.kids == nil {
			return nil
		}
		d = c
	}
	return d
}

// makeDirs returns the directory dir ("." for the root), creating missing
// ones (0755, as tar extractors do) and replacing non-directories in the way:
// a name is never resolved through a symlink.
func makeDirs(root *bnode, dir string, layer uint16) *bnode {
	d := root
	if dir == "." {
		return d
	}
	for _, part := range strings.Split(dir, "/") {
		c, ok := d.kids[part]
		if !ok || c.kids == nil {
			c = &bnode{n: &Node{Mode: unix.S_IFDIR | 0o755, Size: DirSize, layer: layer}, kids: map[string]*bnode{}}
			d.kids[part] = c
		}
		d = c
	}
	return d
}

// OpenLazy returns the reader of a regular file that comes from an entry
// layer; ok is false for a file whose data is in a layer directory (see
// Backing).
func (t *Tree) OpenLazy(n *Node) (r io.ReaderAt, ok bool, err error) {
	if int(n.layer) >= len(t.files) || t.files[n.layer] == nil {
		return nil, false, nil
	}
	r, err = t.files[n.layer].OpenFile(strings.TrimPrefix(t.Path(n), "/"))
	return r, true, err
}

// Lazy reports whether any file of the tree is served from an entry layer.
func (t *Tree) Lazy() bool {
	for _, f := range t.files {
		if f != nil {
			return true
		}
	}
	return false
}
