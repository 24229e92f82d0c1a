package layers

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"unsafe"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/diskspace"
	"github.com/casfs/casfs/layers/merged"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
	overlayXattrs  = "trusted.overlay."
	paxXattr       = "SCHILY.xattr."
)

// applier holds the state of one Apply: the layer root, and what must wait
// for the whole tar to be read (whiteouts and opaque markers, which only
// hide lower layers whatever their position in the tar, and directory
// times, which every child entry would otherwise disturb).
type applier struct {
	root   int
	dir    string
	lowers []string
	// hasLowers says whether the layer has a parent. Its lowers may not be
	// complete yet (Snapshotter.UnpackAbove): lowersFn, until called, gets
	// them once they are, and lowerErr keeps why it could not.
	hasLowers bool
	lowersFn  func() ([]string, error)
	lowerErr  error

	whiteouts map[string]bool            // paths this layer deletes from below
	opaques   map[string]bool            // directories whose lower children this layer hides
	implicit  map[string]bool            // directories made for a child, with no entry of their own
	copiedUp  map[string]bool            // lower files copied up as hardlink targets
	dirTimes  map[string][]unix.Timespec // directory -> atime, mtime from its entry

	// The directory of the last entry stays open: a tar lists a
	// directory's files together, so most entries need no path lookup.
	// Any removal of a directory forgets it.
	lastDir   string
	lastDirFd int
	lastDirSt *unix.Stat_t // lastDirFd's owner and mode, nil until looked at (createdOwned)
	// exactCreate: a create gives a file the mode asked for less umask
	// (known, and no default ACL above it), see createMode.
	exactCreate bool
	umask       uint32
	buf         []byte           // file data on its way from the tar to a file
	space       diskspace.Budget // free space, looked at every few MiB
}

// dirFd returns an O_PATH descriptor of directory rel, owned by the applier
// (the caller does not close it); see openDir.
func (a *applier) dirFd(rel string, create bool) (int, error) {
	if a.lastDirFd >= 0 && a.lastDir == rel {
		return a.lastDirFd, nil
	}
	fd, err := a.openDir(rel, create)
	if err != nil {
		return -1, err
	}
	a.forgetDir()
	a.lastDir, a.lastDirFd = rel, fd
	return fd, nil
}

// forgetDir closes the cached directory: it may have been removed.
func (a *applier) forgetDir() {
	if a.lastDirFd >= 0 {
		unix.Close(a.lastDirFd)
	}
	a.lastDir, a.lastDirFd, a.lastDirSt = "", -1, nil
}

var resolveHow = unix.OpenHow{
	Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
	Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
}

func openBeneath(dirfd int, rel string) (int, error) {
	how := resolveHow
	for {
		fd, err := unix.Openat2(dirfd, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// openDir returns an O_PATH descriptor of directory rel inside the layer,
// never following a symlink. With create, missing directories are made
// (and remembered as implicit). Errors wrap the errno: ELOOP means a
// component is a symlink, ENOTDIR that it is some other non-directory.
func (a *applier) openDir(rel string, create bool) (int, error) {
	fd, err := openBeneath(a.root, rel)
	if err == nil || !create || err != unix.ENOENT {
		if err != nil {
			return -1, a.componentError(rel, err)
		}
		return fd, nil
	}
	cur, err := openBeneath(a.root, ".")
	if err != nil {
		return -1, err
	}
	prefix := "."
	for _, c := range strings.Split(rel, "/") {
		prefix = path.Join(prefix, c)
		next, err := openBeneath(cur, c)
		if err == unix.ENOENT {
			if err = unix.Mkdirat(cur, c, 0o755); err == nil {
				a.implicitDir(cur, c, prefix)
				next, err = openBeneath(cur, c)
			}
		}
		unix.Close(cur)
		if err != nil {
			return -1, a.componentError(prefix, err)
		}
		cur = next
	}
	return cur, nil
}

func (a *applier) componentError(p string, err error) error {
	switch err {
	case unix.ELOOP, unix.EXDEV:
		return fmt.Errorf("path %q goes through a symlink, which is never followed: %w: %w", p, errdefs.ErrInvalidArgument, err)
	case unix.ENOTDIR:
		return fmt.Errorf("path %q goes through a non-directory: %w: %w", p, errdefs.ErrInvalidArgument, err)
	}
	return fmt.Errorf("open directory %q: %w", p, err)
}

// implicitDir gives a directory made only to hold a child the attributes
// the merged lower layers have for it (an overlay copy-up would), or
// root-owned 0755 when they have none.
func (a *applier) implicitDir(parent int, base, rel string) {
	a.implicit[rel] = true
	mode, uid, gid := uint32(0o755), 0, 0
	if _, st, ok := a.lowerLookup(rel); ok && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		mode, uid, gid = st.Mode&0o7777, int(st.Uid), int(st.Gid)
	}
	_ = unix.Fchownat(parent, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	_ = unix.Fchmodat(parent, base, mode, 0)
}

// entry applies one tar header (its data is read from tr).
func (a *applier) entry(hdr *tar.Header, tr io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if hdr.Typeflag == tar.TypeReg && merged.IsEStargzMetadata(name) {
		return nil // one tree for an image, lazy or unpacked
	}
	if err := a.apply(name, hdr, tr); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	return nil
}

func (a *applier) apply(name string, hdr *tar.Header, tr io.Reader) error {
	parent, base := path.Dir(name), path.Base(name)
	parent, err := a.resolveLower(parent)
	if err != nil {
		return err
	}
	name = path.Join(parent, base)
	if strings.HasPrefix(base, whiteoutPrefix) {
		switch {
		case base == opaqueMarker:
			a.opaques[parent] = true
		case strings.HasPrefix(base, whiteoutMeta):
			// Other aufs metadata (.wh..wh.plnk, ...) means nothing here.
		default:
			target := base[len(whiteoutPrefix):]
			if target == "" || target == "." || target == ".." {
				return fmt.Errorf("whiteout names no file: %w", errdefs.ErrInvalidArgument)
			}
			a.whiteouts[path.Join(parent, target)] = true
		}
		return nil
	}
	if name == "." {
		return a.rootEntry(hdr)
	}
	pfd, err := a.dirFd(parent, true)
	if err != nil {
		return err
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		err := unix.Mkdirat(pfd, base, 0o700)
		if err == unix.EEXIST {
			var st unix.Stat_t
			if err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
				if err := a.removeAt(pfd, base, name); err != nil {
					return err
				}
				// Applied in order, the non-directory deleted the lower
				// directory before this one was made: same as a whiteout.
				a.whiteouts[name] = true
				err = unix.Mkdirat(pfd, base, 0o700)
			}
		}
		if err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		delete(a.implicit, name)
		a.dirTimes[name] = entryTimes(hdr)
		return a.setMeta(pfd, base, hdr)
	case tar.TypeReg, tar.TypeGNUSparse: // the reader reports TypeRegA as TypeReg
		return a.writeFile(pfd, base, name, hdr, tr)
	case tar.TypeSymlink:
		if err := a.replace(pfd, base, name, func() error { return unix.Symlinkat(hdr.Linkname, pfd, base) }); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		return a.setMeta(pfd, base, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(hdr.Mode) & 0o7777
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode |= unix.S_IFCHR
		case tar.TypeBlock:
			mode |= unix.S_IFBLK
		default:
			mode |= unix.S_IFIFO
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := a.replace(pfd, base, name, func() error { return unix.Mknodat(pfd, base, mode, int(dev)) }); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return a.setMeta(pfd, base, hdr)
	case tar.TypeLink:
		return a.hardlink(pfd, name, hdr)
	default:
		return fmt.Errorf("tar entry type %q is not supported: %w", hdr.Typeflag, errdefs.ErrNotImplemented)
	}
}

// replace runs create, which makes pfd/base and fails with EEXIST when the
// name is taken; a name this layer already has (a later tar entry replaces
// an earlier one) is removed and create runs again. The snapshot starts
// empty, so the common case costs no lookup.
func (a *applier) replace(pfd int, base, rel string, create func() error) error {
	err := create()
	if err != unix.EEXIST {
		return err
	}
	if err := a.removeAt(pfd, base, rel); err != nil {
		return err
	}
	return create()
}

// writeFile creates a regular file and sets its data and attributes through
// its descriptor: one path lookup per file.
//
// It stops with ENOSPC before the file's bytes would eat into the space kept
// free for the metadata database (package diskspace).
func (a *applier) writeFile(pfd int, base, rel string, hdr *tar.Header, r io.Reader) error {
	if err := a.space.CheckFd(pfd, hdr.Size); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	mode, modeDone := uint32(0o600), false
	if a.exactCreate {
		mode, modeDone = createMode(hdr, a.umask)
	}
	var dirSt *unix.Stat_t
	if pfd == a.lastDirFd {
		dirSt = a.lastDirSt
	}
	owned := createdOwned(pfd, hdr, &dirSt)
	if pfd == a.lastDirFd {
		a.lastDirSt = dirSt
	}
	fd := -1
	err := a.replace(pfd, base, rel, func() (err error) {
		fd, err = createFileMode(pfd, base, mode)
		return err
	})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	err = copyToFd(fd, r, a.copyBuf(hdr.Size))
	if err == nil {
		err = setMetaFd(fd, hdr, !owned, !modeDone)
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}

// writeFile creates pfd/base (which must not exist) with the size bytes of
// r, unless they would eat into the space kept for the metadata database.
func writeFile(pfd int, base string, r io.Reader, size int64) error {
	if err := diskspace.CheckFd(pfd, size); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	fd, err := createFile(pfd, base)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	err = copyToFd(fd, r, nil)
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}

func createFile(pfd int, base string) (int, error) { return createFileMode(pfd, base, 0o600) }

func createFileMode(pfd int, base string, mode uint32) (int, error) {
	return unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
}

// maxCopyBuf bounds the applier's copy buffer: one write per 256 KiB.
const maxCopyBuf = 256 << 10

// copyBuf returns the applier's copy buffer, grown to cover a file of size
// bytes (up to maxCopyBuf): a layer of small files never pays for a large
// buffer, whose fresh pages cost more than the files (a 256 KiB buffer per
// layer was 23 ms of CPU in a 20-layer pull of 1 KiB files).
func (a *applier) copyBuf(size int64) []byte {
	need := int(min(maxCopyBuf, max(4<<10, size+1)))
	if len(a.buf) < need {
		a.buf = make([]byte, min(maxCopyBuf, max(need, 2*len(a.buf))))
	}
	return a.buf
}

func copyToFd(fd int, r io.Reader, buf []byte) error {
	if _, err := io.CopyBuffer(fdWriter(fd), r, buf); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// setMetaFd is setMeta for an open regular file: owner, then mode (chown
// clears setuid and setgid), then xattrs, then times. chown and chmod say
// whether owner and mode still need setting (see createMode).
func setMetaFd(fd int, hdr *tar.Header, chown, chmod bool) error {
	if chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if chmod || chown {
		if err := unix.Fchmod(fd, uint32(hdr.Mode)&0o7777); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for k, v := range entryXattrs(hdr) {
		if err := ignoreErrnos(unix.Fsetxattr(fd, k, []byte(v), 0), unix.ENOTSUP); err != nil {
			return fmt.Errorf("set xattr %s: %w", k, err)
		}
	}
	if err := futimens(fd, entryTimes(hdr)); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// fdWriter writes to a raw descriptor, without the runtime poller an
// *os.File would register it with.
type fdWriter int

func (w fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(int(w), p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

// futimens sets the times of an open file (utimensat with a NULL path).
func futimens(fd int, ts []unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// rootEntry applies the attributes of the layer's own root ("./").
func (a *applier) rootEntry(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeDir {
		return fmt.Errorf("the layer root must be a directory: %w", errdefs.ErrInvalidArgument)
	}
	if err := unix.Fchown(a.root, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(a.root, uint32(hdr.Mode)&0o7777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	for k, v := range entryXattrs(hdr) {
		if err := ignoreErrnos(unix.Fsetxattr(a.root, k, []byte(v), 0), unix.ENOTSUP); err != nil {
			return fmt.Errorf("set xattr %s: %w", k, err)
		}
	}
	a.dirTimes["."] = entryTimes(hdr)
	return nil
}

// setMeta sets owner, then mode (chown clears setuid and setgid), then
// xattrs, then times (directories' times wait for finish).
func (a *applier) setMeta(pfd int, base string, hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeDir {
		a.lastDirSt = nil // it may be the cached directory: look again
		if _, ok := entryXattrs(hdr)[aclDefaultXattr]; ok {
			a.exactCreate = false
		}
	}
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode)&0o7777, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for k, v := range entryXattrs(hdr) {
		err := unix.Lsetxattr(procPath(pfd, base), k, []byte(v), 0)
		// Symlinks and devices cannot carry user.* xattrs; a filesystem
		// without xattrs cannot carry any.
		if err := ignoreErrnos(err, unix.ENOTSUP); err != nil {
			if !(err == unix.EPERM && hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeDir) {
				return fmt.Errorf("set xattr %s: %w", k, err)
			}
		}
	}
	if hdr.Typeflag != tar.TypeDir {
		if err := unix.UtimesNanoAt(pfd, base, entryTimes(hdr), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times: %w", err)
		}
	}
	return nil
}

// entryXattrs returns the xattrs of a tar entry, without overlayfs' own
// (a layer must not forge opaque dirs, redirects or metacopy).
func entryXattrs(hdr *tar.Header) map[string]string {
	var out map[string]string
	for k, v := range hdr.PAXRecords {
		if !strings.HasPrefix(k, paxXattr) {
			continue
		}
		k = k[len(paxXattr):]
		if k == "" || strings.HasPrefix(k, overlayXattrs) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

func entryTimes(hdr *tar.Header) []unix.Timespec {
	m := unix.NsecToTimespec(hdr.ModTime.UnixNano())
	at := m
	if !hdr.AccessTime.IsZero() {
		at = unix.NsecToTimespec(hdr.AccessTime.UnixNano())
	}
	return []unix.Timespec{at, m}
}

// removeAt removes whatever this layer has at pfd/base (rel in the layer),
// recursively for a directory: a later tar entry replaces an earlier one.
func (a *applier) removeAt(pfd int, base, rel string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return fmt.Errorf("stat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(pfd, base, 0); err != nil {
			return fmt.Errorf("replace: %w", err)
		}
		delete(a.copiedUp, rel)
		return nil
	}
	if under(a.lastDir, rel) {
		a.forgetDir() // pfd is rel's parent, never this one
	}
	if err := removeAllAt(pfd, base); err != nil {
		return fmt.Errorf("replace directory: %w", err)
	}
	for k := range a.implicit {
		if under(k, rel) {
			delete(a.implicit, k)
		}
	}
	for k := range a.copiedUp {
		if under(k, rel) {
			delete(a.copiedUp, k)
		}
	}
	for k := range a.dirTimes {
		if under(k, rel) {
			delete(a.dirTimes, k)
		}
	}
	return nil
}

// removeAllAt removes directory pfd/base and everything in it, without
// following symlinks.
func removeAllAt(pfd int, base string) error {
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	for {
		names, err := f.Readdirnames(256)
		for _, n := range names {
			if err := unix.Unlinkat(fd, n, 0); err == unix.EISDIR {
				if err := removeAllAt(fd, n); err != nil {
					return err
				}
			} else if err != nil && err != unix.ENOENT {
				return err
			}
		}
		if err == io.EOF || len(names) == 0 {
			break
		}
		if err != nil {
			return err
		}
		// Entries were removed under the directory's offset: start over.
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	return unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR)
}

// hardlink links name to an earlier entry of this layer, or, when the
// target only exists in a lower layer, copies that file up.
func (a *applier) hardlink(pfd int, name string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	if target == "." || under(target, name) {
		if target == name {
			return nil
		}
		return fmt.Errorf("hardlink to %q cannot work: %w", hdr.Linkname, errdefs.ErrInvalidArgument)
	}
	tparent, err := a.resolveLower(path.Dir(target))
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	target = path.Join(tparent, path.Base(target))
	tbase := path.Base(target)
	tpfd, err := a.openDir(path.Dir(target), false)
	inLayer := err == nil
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
	}
	if inLayer {
		defer unix.Close(tpfd)
		var st unix.Stat_t
		err = unix.Fstatat(tpfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err == unix.ENOENT:
			inLayer = false
		case err != nil:
			return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			return fmt.Errorf("hardlink target %q is a directory: %w", hdr.Linkname, errdefs.ErrInvalidArgument)
		}
	}
	if !inLayer {
		// Only below: copy the target up into this layer at its own
		// path (what overlayfs does for link(2) on a merged mount, and
		// so what containerd's unpacking does), then link to the copy:
		// both names keep sharing one inode in the merged view.
		src, st, ok := a.lowerLookup(target)
		if !ok {
			return fmt.Errorf("hardlink target %q is neither in this layer nor below: %w", hdr.Linkname, errdefs.ErrInvalidArgument)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("hardlink target %q is a directory: %w", hdr.Linkname, errdefs.ErrInvalidArgument)
		}
		if tpfd < 0 {
			if tpfd, err = a.openDir(path.Dir(target), true); err != nil {
				return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
			}
			defer unix.Close(tpfd)
		}
		if err := copyUp(src, &st, tpfd, tbase); err != nil {
			return fmt.Errorf("copy hardlink target %q up from a lower layer: %w", hdr.Linkname, err)
		}
		a.copiedUp[target] = true
	}
	base := path.Base(name)
	if err := a.replace(pfd, base, name, func() error { return unix.Linkat(tpfd, tbase, pfd, base, 0) }); err != nil {
		return fmt.Errorf("link: %w", err)
	}
	return nil
}

// finish applies what had to wait for the whole tar: whiteouts, opaque
// markers, the attributes of implicit directories, and directory times.
func (a *applier) finish() error {
	for _, p := range sortedKeys(a.whiteouts) {
		if err := a.finishWhiteout(p); err != nil {
			return fmt.Errorf("whiteout %q: %w", p, err)
		}
	}
	for _, d := range sortedKeys(a.opaques) {
		if err := a.finishOpaque(d); err != nil {
			return fmt.Errorf("opaque directory %q: %w", d, err)
		}
	}
	// A directory made implicitly below something this layer deletes or
	// makes opaque has nothing below to take its attributes from.
	for _, d := range sortedKeys(a.implicit) {
		if !a.hidesLower(d) {
			continue
		}
		pfd, err := a.openDir(path.Dir(d), false)
		if err != nil {
			continue
		}
		_ = unix.Fchownat(pfd, path.Base(d), 0, 0, unix.AT_SYMLINK_NOFOLLOW)
		_ = unix.Fchmodat(pfd, path.Base(d), 0o755, 0)
		unix.Close(pfd)
	}
	dirs := make([]string, 0, len(a.dirTimes))
	for d := range a.dirTimes {
		dirs = append(dirs, d)
	}
	sortDeepestFirst(dirs)
	for _, d := range dirs {
		if err := a.setDirTimes(d, a.dirTimes[d]); err != nil {
			return fmt.Errorf("directory %q: set times: %w", d, err)
		}
	}
	return nil
}

func (a *applier) setDirTimes(d string, ts []unix.Timespec) error {
	if d == "." {
		return unix.UtimesNanoAt(a.root, ".", ts, 0)
	}
	pfd, err := a.openDir(path.Dir(d), false)
	if err != nil {
		return nil // replaced since by a later entry
	}
	defer unix.Close(pfd)
	return ignoreErrnos(unix.UtimesNanoAt(pfd, path.Base(d), ts, unix.AT_SYMLINK_NOFOLLOW), unix.ENOENT)
}

// hidesLower reports whether this layer deletes d or a parent of d, or
// makes a parent of d opaque.
func (a *applier) hidesLower(d string) bool {
	for p := d; p != "."; p = path.Dir(p) {
		if a.whiteouts[p] || (p != d && a.opaques[p]) {
			return true
		}
	}
	return a.opaques["."]
}

// hiddenAbove reports whether this layer already hides everything below
// some parent of p: the parent is deleted, re-made or opaque in this layer.
func (a *applier) hiddenAbove(p string) bool {
	for q := path.Dir(p); q != "."; q = path.Dir(q) {
		if a.whiteouts[q] || a.opaques[q] {
			return true
		}
	}
	return depth(p) > 1 && a.opaques["."]
}

func (a *applier) finishWhiteout(p string) error {
	if a.hiddenAbove(p) {
		// Nothing below shows here, and overlayfs lists a whiteout
		// inside an opaque directory as a name that cannot be looked up.
		return nil
	}
	pfd, err := a.openDir(path.Dir(p), true)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return nil // a non-directory of this layer already hides it all
		}
		return err
	}
	defer unix.Close(pfd)
	base := path.Base(p)
	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
		if err := unix.Mknodat(pfd, base, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return nil
	case err != nil:
		return err
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		// This layer deletes the lower directory and makes its own.
		return setOpaque(pfd, base)
	case a.copiedUp[p]:
		// Copied up only to be linked to, and deleted by this layer:
		// the other names keep the inode, this one is a whiteout.
		if err := unix.Unlinkat(pfd, base, 0); err != nil {
			return fmt.Errorf("remove copied-up hardlink target: %w", err)
		}
		if err := unix.Mknodat(pfd, base, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return nil
	default:
		return nil // this layer's own file already hides the lower one
	}
}

func (a *applier) finishOpaque(d string) error {
	if d == "." {
		return a.opaqueRoot()
	}
	pfd, err := a.openDir(path.Dir(d), true)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return nil
		}
		return err
	}
	defer unix.Close(pfd)
	base := path.Base(d)
	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		if err := unix.Mkdirat(pfd, base, 0o755); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		a.implicitDir(pfd, base, d)
	} else if err != nil {
		return err
	} else if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	return setOpaque(pfd, base)
}

// lowerDirs returns the lower layers' directories, top-most first, waiting
// for them the first time when they were still being unpacked. A failed
// wait leaves none, and Apply fails with lowerErr.
func (a *applier) lowerDirs() []string {
	if a.lowersFn != nil {
		a.lowers, a.lowerErr = a.lowersFn()
		a.lowersFn = nil
	}
	return a.lowers
}

// opaqueRoot hides everything below for a layer whose root is opaque.
// overlayfs does not look at the opaque xattr of a layer's root, so every
// name the lower layers show at the root gets a whiteout instead (or, if
// this layer has a directory of that name, becomes opaque).
func (a *applier) opaqueRoot() error {
	names := map[string]bool{}
	for _, l := range a.lowerDirs() {
		ents, err := os.ReadDir(l)
		if err != nil {
			return err
		}
		for _, e := range ents {
			names[e.Name()] = true
		}
	}
	for n := range names {
		if _, _, ok := a.lowerLookup(n); !ok {
			continue
		}
		if err := a.finishWhiteout(n); err != nil {
			return err
		}
	}
	return nil
}

func setOpaque(pfd int, base string) error {
	if err := unix.Lsetxattr(procPath(pfd, base), opaqueXattr, []byte("y"), 0); err != nil {
		return fmt.Errorf("set %s: %w", opaqueXattr, err)
	}
	return nil
}
