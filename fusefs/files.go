package fusefs

import (
	"context"
	"os"
	"syscall"
	"time"

	gfs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	digest "github.com/opencontainers/go-digest"
)

// fileFlags: file contents never change under one inode, so the page cache
// survives reopening (KEEP_CACHE, which go-fuse drops when passthrough is
// granted: the kernel then reads the backing file's own cache), and closing
// a read-only file needs no FLUSH round trip (NOFLUSH).
const fileFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH

func blobIno(d digest.Digest) uint64 { return ino("blob", string(d)) }

// blobMode is the mode of blob files: see Options.PublicBlobs.
func (f *FS) blobMode() uint32 {
	if f.opts.PublicBlobs {
		return syscall.S_IFREG | 0o444
	}
	return syscall.S_IFREG | 0o400
}

func fileAttr(a *fuse.Attr, nodeIno uint64, mode uint32, size int64, at time.Time) {
	a.Mode = mode
	a.Ino = nodeIno
	a.Nlink = 1
	a.Size = uint64(size)
	a.Blocks = (uint64(size) + 511) / 512
	a.Blksize = 4096
	setTime(a, at)
}

// blobFile is one blob: under blobs/<alg>/ and as an image's manifest.json,
// config.json or index.json (one inode for all its names).
type blobFile struct {
	gfs.Inode
	noXattrs
	fs   *FS
	d    digest.Digest
	meta blobMeta
}

var (
	_ gfs.NodeOpener    = (*blobFile)(nil)
	_ gfs.NodeGetattrer = (*blobFile)(nil)
)

func (b *blobFile) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fileAttr(&out.Attr, blobIno(b.d), b.fs.blobMode(), b.meta.size, b.meta.modTime())
	out.SetTimeout(b.fs.opts.ImmutableTimeout)
	return 0
}

func (b *blobFile) Open(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	f, err := b.fs.src.OpenBlob(ctx, b.d)
	if err != nil {
		return nil, 0, b.fs.errno("open blob "+string(b.d), err)
	}
	return b.fs.openHandle(f)
}

// blobChildInfo returns the inode of a blob shown in an image directory.
func (f *FS) blobChildInfo(ctx context.Context, parent *gfs.Inode, v *view, d digest.Digest, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	if d.Validate() != nil {
		return nil, syscall.ENOENT
	}
	meta, err := f.blobMeta(ctx, v, d)
	if err != nil {
		return nil, f.errno("blob info "+string(d), err)
	}
	ch := f.newChild(ctx, parent, &blobFile{fs: f, d: d, meta: meta}, syscall.S_IFREG, blobIno(d))
	bf, ok := ch.Operations().(*blobFile)
	if !ok {
		return nil, syscall.EIO
	}
	fileAttr(&out.Attr, blobIno(d), f.blobMode(), bf.meta.size, bf.meta.modTime())
	f.setTimeouts(out, f.opts.ImmutableTimeout, f.opts.ImmutableTimeout)
	return ch, 0
}

// blobMeta is a blob's size and time from the listing or, when the listing
// lags a blob committed since the last Refresh, from its record (the
// authority).
func (f *FS) blobMeta(ctx context.Context, v *view, d digest.Digest) (blobMeta, error) {
	if meta, ok := v.blobs[d.Algorithm().String()][d.Encoded()]; ok {
		return meta, nil
	}
	info, err := f.src.BlobInfo(ctx, d)
	if err != nil {
		return blobMeta{}, err
	}
	return metaOf(info), nil
}

// fileHandle is an open backing file: a blob or a file in a layer snapshot.
// With passthrough the kernel reads it directly; otherwise Read splices
// from it.
type fileHandle struct {
	f *os.File
}

var (
	_ gfs.FilePassthroughFder = (*fileHandle)(nil)
	_ gfs.FileReader          = (*fileHandle)(nil)
	_ gfs.FileReleaser        = (*fileHandle)(nil)
)

func (h *fileHandle) PassthroughFd() (int, bool) { return int(h.f.Fd()), true }

func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultFd(h.f.Fd(), off, len(dest)), 0
}

func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	h.f.Close()
	return 0
}

// openHandle wraps an opened backing file and, on the first open of the
// mount, finds out whether the kernel accepts passthrough.
func (f *FS) openHandle(file *os.File) (gfs.FileHandle, uint32, syscall.Errno) {
	f.passthroughOn(file)
	return &fileHandle{f: file}, fileFlags, 0
}

// passthroughOn reports whether the kernel takes backing files, finding out
// with file on the first call.
func (f *FS) passthroughOn(file *os.File) bool {
	if f.passMode.Load() == passUnknown {
		f.passMu.Lock()
		if f.passMode.Load() == passUnknown {
			f.probePassthrough(file)
		}
		f.passMu.Unlock()
	}
	return f.passMode.Load() == passActive
}

// backingFd registers file for passthrough and returns its backing id, or
// 0 when reads must go through the daemon.
func (f *FS) backingFd(file *os.File) int32 {
	if !f.passthroughOn(file) {
		return 0
	}
	srv := f.server.Load()
	if srv == nil {
		return 0
	}
	id, errno := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(file.Fd())})
	if errno != 0 {
		f.log.Warn("fuse passthrough refused for a file; it is read through the daemon", "file", file.Name(), "err", errno)
		return 0
	}
	return id
}

// probePassthrough registers the first backing file with the kernel once
// and logs the outcome. go-fuse makes the same call right after Open
// returns and, if it fails, silently turns passthrough off for the whole
// mount; this is how the operator learns about it. A backing file the
// kernel refuses (ELOOP: the store sits on a stacked filesystem deeper than
// MountOptions.MaxStackDepth) is the usual cause.
func (f *FS) probePassthrough(file *os.File) {
	srv := f.server.Load()
	if srv == nil {
		return // not mounted through Mount yet: try again on the next open
	}
	if srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		f.passMode.Store(passOff)
		f.log.Info("fuse passthrough off: the kernel does not offer it; reads go through the daemon")
		return
	}
	id, errno := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(file.Fd())})
	if errno != 0 {
		f.passMode.Store(passOff)
		f.log.Info("fuse passthrough off: the kernel refused a backing file; reads go through the daemon",
			"file", file.Name(), "err", errno)
		return
	}
	srv.UnregisterBackingFd(id)
	f.passMode.Store(passActive)
	f.log.Info("fuse passthrough active: the kernel reads backing files directly")
}

// memFile is a small synthetic file (an image's digest).
type memFile struct {
	gfs.Inode
	noXattrs
	data []byte
	at   time.Time
}

func (m *memFile) attr(a *fuse.Attr, nodeIno uint64) {
	fileAttr(a, nodeIno, syscall.S_IFREG|0o444, int64(len(m.data)), m.at)
}

func (m *memFile) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	m.attr(&out.Attr, m.StableAttr().Ino)
	return 0
}

func (m *memFile) Open(ctx context.Context, flags uint32) (gfs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	return &memHandle{}, fileFlags, 0
}

// memHandle is the handle of an open memFile; the data lives in the node.
type memHandle struct{}

func (m *memFile) Read(ctx context.Context, fh gfs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(m.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(m.data)))
	return fuse.ReadResultData(m.data[off:end]), 0
}

// linkNode is a synthetic relative symlink.
type linkNode struct {
	gfs.Inode
	noXattrs
	target string
	at     time.Time
}

func (l *linkNode) attr(a *fuse.Attr, nodeIno uint64) {
	fileAttr(a, nodeIno, syscall.S_IFLNK|0o777, int64(len(l.target)), l.at)
}

func (l *linkNode) Getattr(ctx context.Context, fh gfs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	l.attr(&out.Attr, l.StableAttr().Ino)
	return 0
}

func (l *linkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(l.target), 0
}

func (f *FS) linkChild(ctx context.Context, parent *gfs.Inode, target string, nodeIno uint64, at time.Time, out *fuse.EntryOut) (*gfs.Inode, syscall.Errno) {
	ch := f.newChild(ctx, parent, &linkNode{target: target, at: at}, syscall.S_IFLNK, nodeIno)
	ln, ok := ch.Operations().(*linkNode)
	if !ok {
		return nil, syscall.EIO
	}
	ln.attr(&out.Attr, nodeIno)
	f.setTimeouts(out, f.opts.ImmutableTimeout, f.opts.ImmutableTimeout)
	return ch, 0
}
