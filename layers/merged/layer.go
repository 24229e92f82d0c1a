package merged

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Layer is one layer of a merged tree: a snapshot directory (Dir) or any
// other source of entries, such as an eStargz table of contents whose file
// contents arrive on demand.
type Layer interface {
	// Walk calls fn for every entry of the layer, each directory before the
	// entries inside it; the layer root itself is the entry with Path "".
	// The Entry and its slices may be reused after fn returns.
	Walk(ctx context.Context, fn func(*Entry) error) error
	// Open returns the content of the regular file at path ("usr/bin/ls").
	// An *os.File lets the filesystem hand reads to the kernel (FUSE
	// passthrough); any other Content is read through ReadAt.
	Open(ctx context.Context, path string) (Content, error)
}

// Content is an open regular file of a layer.
type Content interface {
	io.ReaderAt
	io.Closer
}

// Entry is one name in a layer.
type Entry struct {
	// Path is relative to the layer root, slash-separated, without a
	// leading slash; "" is the root.
	Path   string
	Attr   Attr
	Target string  // symlink target
	Xattrs []Xattr // without overlayfs' private trusted.overlay.* ones
	// Whiteout deletes Path from the layers below (Attr is ignored).
	Whiteout bool
	// Opaque hides, for a directory, everything the layers below have
	// inside it.
	Opaque bool
	// Link is non-zero for a file with more than one name in its layer:
	// entries of one layer with the same Link are one inode (hardlinks).
	Link uint64
}

// Dir is a layer stored as a directory in overlayfs' encoding (a snapshot).
type Dir string

// Open opens a file of the layer for reading, never following a symlink in
// its last element.
func (d Dir) Open(ctx context.Context, path string) (Content, error) {
	return os.OpenFile(filepath.Join(string(d), path), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}

// Walk lists the layer with one lstat and one listxattr per entry.
func (d Dir) Walk(ctx context.Context, fn func(*Entry) error) error {
	var e Entry
	if err := d.stat(unix.AT_FDCWD, string(d), "", &e); err != nil {
		return err
	}
	if !e.Attr.IsDir() {
		return fmt.Errorf("%s is not a directory", string(d))
	}
	if err := fn(&e); err != nil {
		return err
	}
	return d.walkDir(ctx, "", fn)
}

// walkDir stats every entry of the directory at rel relative to the open
// directory (no path lookup from / per entry: a tree is built from one
// stat and one xattr listing per entry, which is most of its cost), then
// hands them to fn in order, descending into subdirectories.
func (d Dir) walkDir(ctx context.Context, rel string, fn func(*Entry) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := d.abs(rel)
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		f.Close()
		return fmt.Errorf("read directory %s: %w", dir, err)
	}
	ents := make([]Entry, len(names))
	fd := int(f.Fd())
	for i, name := range names {
		p := name
		if rel != "" {
			p = rel + "/" + name
		}
		if err := d.stat(fd, name, p, &ents[i]); err != nil {
			f.Close()
			return err
		}
	}
	f.Close()
	for i := range ents {
		e := &ents[i]
		if err := fn(e); err != nil {
			return err
		}
		if e.Attr.IsDir() && !e.Whiteout {
			if err := d.walkDir(ctx, e.Path, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d Dir) abs(rel string) string {
	if rel == "" {
		return string(d)
	}
	return string(d) + "/" + rel
}

// stat fills e for the entry at rel, which is name in the directory dirfd
// (or AT_FDCWD and an absolute name).
func (d Dir) stat(dirfd int, name, rel string, e *Entry) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat %s: %w", d.abs(rel), err)
	}
	*e = Entry{Path: rel, Attr: Attr{
		Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Size: st.Size, Rdev: st.Rdev,
		Mtime: st.Mtim,
	}}
	typ := st.Mode & syscall.S_IFMT
	if typ == syscall.S_IFCHR && st.Rdev == 0 {
		e.Whiteout = true
		return nil
	}
	if typ == syscall.S_IFLNK {
		t, err := readlinkAt(dirfd, name)
		if err != nil {
			return fmt.Errorf("read link %s: %w", d.abs(rel), err)
		}
		e.Target = t
	}
	if typ != syscall.S_IFDIR && st.Nlink > 1 {
		// One layer directory is one filesystem, so the inode number alone
		// identifies the file.
		e.Link = st.Ino
	}
	xs, opaque, err := readXattrs(dirfd, name, d.abs(rel))
	if err != nil {
		return err
	}
	e.Xattrs, e.Opaque = xs, opaque && typ == syscall.S_IFDIR
	return nil
}

func readlinkAt(dirfd int, name string) (string, error) {
	for size := 128; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
