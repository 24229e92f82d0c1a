package fusefs

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"time"

	gfs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

const (
	nameBlobs  = "blobs"
	nameImages = "images"
	nameRootfs = "rootfs"
)

// dirFlags make the kernel keep a directory's listing in its page cache
// (FOPEN_CACHE_DIR) across opens (FOPEN_KEEP_CACHE); Refresh drops it with
// an inode notification when the listing changes.
const dirFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE

// dirHandle serves a listing computed at opendir.
type dirHandle struct {
	ents []fuse.DirEntry
	pos  int
}

func newDirHandle(ents []fuse.DirEntry) *dirHandle {
	for i := range ents {
		ents[i].Off = uint64(i + 1)
	}
	return &dirHandle{ents: ents}
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.pos >= len(d.ents) {
		return nil, 0
	}
	e := &d.ents[d.pos]
	d.pos++
	return e, 0
}

// Seekdir goes on from off. The kernel opens no directories (see
// rawFS.OpenDir), so each READDIR of a listing gets a fresh handle over the
// view of that moment: an offset past a listing that shrank since the last
// page is its end, not an error.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.pos = int(min(off, uint64(len(d.ents))))
	return 0
}

// listingAttr fills the attributes of a synthetic directory.
func listingAttr(a *fuse.Attr, nodeIno uint64, subdirs int, at time.Time) {
	a.Mode = syscall.S_IFDIR | 0o555
	a.Ino = nodeIno
	a.Nlink = uint32(2 + subdirs)
	a.Size = 4096
	a.Blksize = 4096
	setTime(a, at)
}

// noXattrs gives synthetic nodes (everything outside rootfs/) an xattr
// answer that needs no further round trips: they have none, and EOPNOTSUPP
// makes ls -l stop asking for labels and ACLs (see mnode.Getxattr).
type noXattrs struct{}

func (noXattrs) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.EOPNOTSUPP
}

func (noXattrs) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return 0, 0
}

// rootDir is the mount's root: blobs/, images/, rootfs/.
type rootDir struct {
	gfs.Inode
	noXattrs
	fs *FS
}

var (
	_ gfs.NodeLookuper       = (*rootDir)(nil)
	_ gfs.NodeOpendirHandler = (*rootDir)(nil)
	_ gfs.NodeGetattrer      = (*rootDir)(nil)
	_ gfs.NodeStatfser       = (*rootDir)(nil)
)

// Statfs reports the figures of the filesystem that holds the store (its
// blocks, free space, inodes and name length), so that df lists the mount
// and getconf NAME_MAX answers; without a StatfsPath they stay zero.
func (r *rootDir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if r.fs.opts.StatfsPath == "" {
		return 0
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(r.fs.opts.StatfsPath, &st); err != nil {
		return gfs.ToErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

func (r *rootDir) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	v, errno := r.fs.view(ctx)
	if errno != 0 {
		return errno
	}
	listingAttr(&out.Attr, 1, 3, v.at)
	out.SetTimeout(r.fs.opts.ListingTimeout)
	return 0
}

func (r *rootDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	v, errno := r.fs.view(ctx)
	if errno != 0 {
		return nil, errno
	}
	var ops gfs.InodeEmbedder
	switch name {
	case nameBlobs:
		ops = &blobsDir{fs: r.fs}
	case nameImages:
		ops = &imagesDir{fs: r.fs}
	case nameRootfs:
		ops = &rootfsDir{fs: r.fs}
	default:
		return nil, syscall.ENOENT
	}
	return r.fs.listingChild(ctx, &r.Inode, ops, ino("top", name), v, out)
}

func (r *rootDir) OpendirHandle(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	var ents []fuse.DirEntry
	for _, n := range []string{nameBlobs, nameImages, nameRootfs} {
		ents = append(ents, fuse.DirEntry{Name: n, Mode: syscall.S_IFDIR, Ino: ino("top", n)})
	}
	// Names only: rawFS learns the node id of rootfs/ from its LOOKUP.
	return &namesOnly{newDirHandle(ents)}, dirFlags, 0
}

// listingChild returns the inode of a synthetic directory and fills its entry.
func (f *FS) listingChild(ctx context.Context, parent *gfs.Inode, ops gfs.InodeEmbedder, nodeIno uint64, v *view, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	ch := f.newChild(ctx, parent, ops, syscall.S_IFDIR, nodeIno)
	ga, ok := ch.Operations().(gfs.NodeGetattrer)
	if !ok {
		return nil, syscall.EIO
	}
	var ao fuse.AttrOut
	if errno := ga.Getattr(ctx, nil, &ao); errno != 0 {
		return nil, errno
	}
	out.Attr = ao.Attr
	f.setTimeouts(out, f.opts.ListingTimeout, f.opts.ListingTimeout)
	return ch, 0
}

// blobsDir is blobs/: one directory per digest algorithm.
type blobsDir struct {
	gfs.Inode
	noXattrs
	fs *FS
}

func (b *blobsDir) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	v, errno := b.fs.view(ctx)
	if errno != 0 {
		return errno
	}
	listingAttr(&out.Attr, ino("top", nameBlobs), len(v.blobs), v.at)
	out.SetTimeout(b.fs.opts.ListingTimeout)
	return 0
}

func (b *blobsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	v, errno := b.fs.view(ctx)
	if errno != 0 {
		return nil, errno
	}
	if _, ok := v.blobs[name]; !ok {
		return nil, syscall.ENOENT
	}
	return b.fs.listingChild(ctx, &b.Inode, &algDir{fs: b.fs, alg: name}, ino("alg", name), v, out)
}

func (b *blobsDir) OpendirHandle(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	v, errno := b.fs.view(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	var ents []fuse.DirEntry
	for _, alg := range sortedKeys(v.blobs) {
		ents = append(ents, fuse.DirEntry{Name: alg, Mode: syscall.S_IFDIR, Ino: ino("alg", alg)})
	}
	// Names only: rawFS learns the node ids of blobs/<alg>/ from their LOOKUP.
	return &namesOnly{newDirHandle(ents)}, dirFlags, 0
}

// algDir is blobs/<alg>/: one file per blob.
type algDir struct {
	gfs.Inode
	noXattrs
	fs  *FS
	alg string
}

func (a *algDir) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	v, errno := a.fs.view(ctx)
	if errno != 0 {
		return errno
	}
	listingAttr(&out.Attr, ino("alg", a.alg), 0, v.at)
	out.SetTimeout(a.fs.opts.ListingTimeout)
	return 0
}

// Lookup and OpendirHandle are not reached: rawFS answers the names and
// listings of blobs/<alg>/ (see rawblobs.go).
func (a *algDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	a.fs.log.Error("fuse: blobs/ lookup reached the node bridge", "name", name)
	return nil, syscall.EIO
}

func (a *algDir) OpendirHandle(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	a.fs.log.Error("fuse: blobs/ listing reached the node bridge", "alg", a.alg)
	return nil, 0, syscall.EIO
}

// rootfsDir is rootfs/: one merged tree per image root filesystem.
type rootfsDir struct {
	gfs.Inode
	noXattrs
	fs *FS
}

func (r *rootfsDir) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	v, errno := r.fs.view(ctx)
	if errno != 0 {
		return errno
	}
	listingAttr(&out.Attr, ino("top", nameRootfs), len(v.rootfs), v.at)
	out.SetTimeout(r.fs.opts.ListingTimeout)
	return 0
}

// Lookup is not reached: rawFS answers the names in rootfs/ (see raw.go).
func (r *rootfsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	r.fs.log.Error("fuse: rootfs/ lookup reached the node bridge", "name", name)
	return nil, syscall.EIO
}

func (r *rootfsDir) OpendirHandle(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	v, errno := r.fs.view(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	var ents []fuse.DirEntry
	for _, id := range sortedKeys(v.rootfs) {
		// Inode numbers of trees not built yet are unknown; 0 lets the
		// kernel fill in "unknown".
		ents = append(ents, fuse.DirEntry{Name: id, Mode: syscall.S_IFDIR})
	}
	return &namesOnly{newDirHandle(ents)}, dirFlags, 0
}

// namesOnly is a listing whose READDIRPLUS replies carry names without
// attributes: listing rootfs/ must not build every image's tree, and the
// root's listing must not hand out the node id of rootfs/ unseen. A zero
// node id in a readdirplus entry tells the kernel to skip it (it looks the
// name up when someone stats it).
type namesOnly struct{ *dirHandle }

var _ gfs.FileLookuper = (*namesOnly)(nil)

func (namesOnly) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	return nil, syscall.EAGAIN
}

// imagesDir is images/ or any directory below it: repository elements,
// image directories, or both (see the package comment).
type imagesDir struct {
	gfs.Inode
	noXattrs
	fs   *FS
	path []string   // below images/
	img  *ImageInfo // the image this directory shows, fixed for the inode's life
}

// Image directory file names.
const (
	fileManifest = "manifest.json"
	fileConfig   = "config.json"
	fileIndex    = "index.json"
	fileDigest   = "digest"
	dirLayers    = "layers"
	linkRootfs   = "rootfs"
)

func imgDirIno(path []string, img *ImageInfo) uint64 {
	p := strings.Join(path, "/")
	if img == nil {
		return ino("images", p)
	}
	return ino("images", p, string(img.Target.Digest), string(img.Manifest), string(img.Config), img.RootfsID, strconv.Itoa(len(img.Layers)))
}

func (d *imagesDir) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	v, errno := d.fs.view(ctx)
	if errno != 0 {
		return errno
	}
	subdirs := 0
	if cur := v.imageDir(d.path); cur != nil {
		subdirs = len(cur.kids)
	}
	if d.img != nil {
		subdirs++ // layers/
	}
	listingAttr(&out.Attr, imgDirIno(d.path, d.img), subdirs, v.at)
	out.SetTimeout(d.fs.opts.ListingTimeout)
	return 0
}

// fixed lists the image's own entries, in directory order.
func (d *imagesDir) fixed() []fuse.DirEntry {
	img := d.img
	if img == nil {
		return nil
	}
	var ents []fuse.DirEntry
	if img.Config != "" {
		ents = append(ents, fuse.DirEntry{Name: fileConfig, Mode: syscall.S_IFREG, Ino: blobIno(img.Config)})
	}
	ents = append(ents, fuse.DirEntry{Name: fileDigest, Mode: syscall.S_IFREG, Ino: d.digestIno()})
	if img.Manifest != "" && img.Target.Digest != "" && img.Manifest != img.Target.Digest {
		ents = append(ents, fuse.DirEntry{Name: fileIndex, Mode: syscall.S_IFREG, Ino: blobIno(img.Target.Digest)})
	}
	ents = append(ents, fuse.DirEntry{Name: dirLayers, Mode: syscall.S_IFDIR, Ino: d.layersIno()})
	if img.Manifest != "" {
		ents = append(ents, fuse.DirEntry{Name: fileManifest, Mode: syscall.S_IFREG, Ino: blobIno(img.Manifest)})
	}
	if img.RootfsID != "" {
		ents = append(ents, fuse.DirEntry{Name: linkRootfs, Mode: syscall.S_IFLNK, Ino: d.rootfsLinkIno()})
	}
	return ents
}

func (d *imagesDir) digestIno() uint64 {
	return ino("digestfile", strings.Join(d.path, "/"), string(d.img.Target.Digest))
}
func (d *imagesDir) layersIno() uint64 {
	return ino("layers", strconv.FormatUint(imgDirIno(d.path, d.img), 16))
}
func (d *imagesDir) rootfsLinkIno() uint64 {
	return ino("rootfslink", strings.Join(d.path, "/"), d.img.RootfsID)
}

// up returns the relative path from a directory depth levels below the
// mount root back to the root.
func up(depth int) string { return strings.Repeat("../", depth) }

func (d *imagesDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	v, errno := d.fs.view(ctx)
	if errno != 0 {
		return nil, errno
	}
	if img := d.img; img != nil {
		imm := d.fs.opts.ImmutableTimeout
		switch {
		case name == fileManifest && img.Manifest != "":
			return d.fs.blobChildInfo(ctx, &d.Inode, v, img.Manifest, out)
		case name == fileConfig && img.Config != "":
			return d.fs.blobChildInfo(ctx, &d.Inode, v, img.Config, out)
		case name == fileIndex && img.Manifest != "" && img.Target.Digest != "" && img.Manifest != img.Target.Digest:
			return d.fs.blobChildInfo(ctx, &d.Inode, v, img.Target.Digest, out)
		case name == fileDigest:
			mf := &memFile{data: []byte(string(img.Target.Digest) + "\n"), at: v.at}
			ch := d.fs.newChild(ctx, &d.Inode, mf, syscall.S_IFREG, d.digestIno())
			ch.Operations().(*memFile).attr(&out.Attr, ch.StableAttr().Ino)
			d.fs.setTimeouts(out, imm, imm)
			return ch, 0
		case name == dirLayers:
			ld := &layersDir{fs: d.fs, img: img, depth: len(d.path) + 2, at: v.at}
			ch := d.fs.newChild(ctx, &d.Inode, ld, syscall.S_IFDIR, d.layersIno())
			ch.Operations().(*layersDir).attr(&out.Attr, ch.StableAttr().Ino)
			d.fs.setTimeouts(out, imm, imm)
			return ch, 0
		case name == linkRootfs && img.RootfsID != "":
			target := up(len(d.path)+1) + nameRootfs + "/" + img.RootfsID
			return d.fs.linkChild(ctx, &d.Inode, target, d.rootfsLinkIno(), v.at, out)
		}
	}
	cur := v.imageDir(d.path)
	if cur == nil {
		return nil, syscall.ENOENT
	}
	kid := cur.kids[name]
	if kid == nil {
		return nil, syscall.ENOENT
	}
	path := append(append([]string(nil), d.path...), name)
	ops := &imagesDir{fs: d.fs, path: path, img: kid.image}
	return d.fs.listingChild(ctx, &d.Inode, ops, imgDirIno(path, kid.image), v, out)
}

func (d *imagesDir) OpendirHandle(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	v, errno := d.fs.view(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	ents := d.fixed()
	taken := map[string]bool{}
	for _, e := range ents {
		taken[e.Name] = true
	}
	if cur := v.imageDir(d.path); cur != nil {
		for _, name := range sortedKeys(cur.kids) {
			if taken[name] {
				continue // the image's own file wins, see the package comment
			}
			path := append(append([]string(nil), d.path...), name)
			ents = append(ents, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: imgDirIno(path, cur.kids[name].image)})
		}
	}
	return newDirHandle(ents), dirFlags, 0
}

// layersDir is <image>/layers/: symlinks 0..n-1 to the layer blobs.
type layersDir struct {
	gfs.Inode
	noXattrs
	fs    *FS
	img   *ImageInfo
	depth int // of this directory below the mount root
	at    time.Time
}

func (l *layersDir) attr(a *fuse.Attr, nodeIno uint64) {
	listingAttr(a, nodeIno, 0, l.at)
}

func (l *layersDir) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	l.attr(&out.Attr, l.StableAttr().Ino)
	out.SetTimeout(l.fs.opts.ImmutableTimeout)
	return 0
}

func (l *layersDir) linkIno(i int) uint64 {
	return ino("layerlink", strconv.FormatUint(l.StableAttr().Ino, 16), strconv.Itoa(i))
}

func (l *layersDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	i, err := strconv.Atoi(name)
	if err != nil || i < 0 || i >= len(l.img.Layers) || strconv.Itoa(i) != name {
		return nil, syscall.ENOENT
	}
	d := l.img.Layers[i]
	target := up(l.depth) + nameBlobs + "/" + d.Algorithm().String() + "/" + d.Encoded()
	return l.fs.linkChild(ctx, &l.Inode, target, l.linkIno(i), l.at, out)
}

func (l *layersDir) OpendirHandle(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	ents := make([]fuse.DirEntry, len(l.img.Layers))
	for i := range l.img.Layers {
		ents[i] = fuse.DirEntry{Name: strconv.Itoa(i), Mode: syscall.S_IFLNK, Ino: l.linkIno(i)}
	}
	return newDirHandle(ents), dirFlags, 0
}
