package layers

import (
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/casfs/casfs/errdefs"
	"golang.org/x/sys/unix"
)

// lowerLookup finds rel in the merged view of the lower layers, the way
// overlayfs would: top-most layer first, stopping at a whiteout, at a
// non-directory on the way (it hides what is below), and at an opaque
// directory on the way. It never follows a symlink. It returns the real
// path in the layer that has it.
func (a *applier) lowerLookup(rel string) (string, unix.Stat_t, bool) {
	comps := strings.Split(rel, "/")
	for _, l := range a.lowerDirs() {
		cur, opaque := l, false
		for i, c := range comps {
			p := cur + "/" + c
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				if opaque {
					return "", st, false
				}
				break // not in this layer: look further down
			}
			if isWhiteout(&st) {
				return "", st, false
			}
			if i == len(comps)-1 {
				return p, st, true
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return "", st, false
			}
			if isOpaqueDir(p) {
				opaque = true
			}
			cur = p
		}
	}
	return "", unix.Stat_t{}, false
}

func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func isOpaqueDir(p string) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(p, opaqueXattr, buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// resolveLower returns rel with every component that this layer lacks and
// the lower layers show as a symlink replaced by the symlink's target,
// resolved lexically inside the root (".." stops at the root, absolute
// targets start from it). A tar entry "lib/x" over a lower "lib -> usr/lib"
// so lands in usr/lib/x, as it does when containerd or umoci unpack onto a
// merged root, instead of making a directory "lib" that would hide the
// link. Symlinks of this layer itself are never followed (openDir refuses
// them), and nothing is ever opened through a symlink: the result is a
// plain path that the caller opens beneath the layer root.
func (a *applier) resolveLower(rel string) (string, error) {
	if !a.hasLowers || rel == "." {
		return rel, nil
	}
	if rel == a.lastDir {
		return rel, nil // open just now: all there in this layer
	}
	if fd, err := openBeneath(a.root, rel); err == nil {
		unix.Close(fd) // all there in this layer: nothing to resolve
		return rel, nil
	}
	comps := strings.Split(rel, "/")
	resolved, hops := ".", 0
	for i := 0; i < len(comps); i++ {
		p := path.Join(resolved, comps[i])
		if a.inLayer(p) {
			resolved = p
			continue
		}
		lp, st, ok := a.lowerLookup(p)
		if !ok || st.Mode&unix.S_IFMT != unix.S_IFLNK {
			resolved = p
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("path %q: too many levels of symlinks in lower layers: %w", rel, errdefs.ErrInvalidArgument)
		}
		target, err := os.Readlink(lp)
		if err != nil {
			return "", fmt.Errorf("path %q: read lower symlink: %w", rel, err)
		}
		from := resolved
		if path.IsAbs(target) {
			from = "."
		}
		next := strings.TrimPrefix(path.Join("/", from, target, path.Join(comps[i+1:]...)), "/")
		if next == "" {
			next = "."
		}
		comps, resolved, i = strings.Split(next, "/"), ".", -1
	}
	return resolved, nil
}

// inLayer reports whether this layer has anything at rel (not following
// symlinks).
func (a *applier) inLayer(rel string) bool {
	if rel == "." {
		return true
	}
	pfd, err := openBeneath(a.root, path.Dir(rel))
	if err != nil {
		return err != unix.ENOENT // let the caller's open report anything odd
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	return unix.Fstatat(pfd, path.Base(rel), &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// copyUp copies the lower file src (a non-directory) to pfd/base with its
// owner, mode, xattrs and times.
func copyUp(src string, st *unix.Stat_t, pfd int, base string) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer in.Close()
		if err := writeFile(pfd, base, in, st.Size); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, pfd, base); err != nil {
			return err
		}
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		if err := unix.Mknodat(pfd, base, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("cannot copy file of mode %o", st.Mode)
	}
	if err := unix.Fchownat(pfd, base, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if !isLink {
		if err := unix.Fchmodat(pfd, base, st.Mode&0o7777, 0); err != nil {
			return err
		}
	}
	xs, err := listXattrs(src)
	if err != nil {
		return err
	}
	for k, v := range xs {
		if strings.HasPrefix(k, overlayXattrs) {
			continue
		}
		if err := unix.Lsetxattr(procPath(pfd, base), k, v, 0); err != nil && err != unix.ENOTSUP && !(isLink && err == unix.EPERM) {
			return fmt.Errorf("set xattr %s: %w", k, err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// listXattrs returns the xattrs of p (not following a symlink).
func listXattrs(p string) (map[string][]byte, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, k := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if k == "" {
			continue
		}
		vsz, err := unix.Lgetxattr(p, k, nil)
		if err != nil {
			continue
		}
		v := make([]byte, vsz)
		vsz, err = unix.Lgetxattr(p, k, v)
		if err != nil {
			continue
		}
		out[k] = v[:vsz]
	}
	return out, nil
}

func sortDeepestFirst(paths []string) {
	sort.Slice(paths, func(i, j int) bool {
		if di, dj := depth(paths[i]), depth(paths[j]); di != dj {
			return di > dj
		}
		return paths[i] < paths[j]
	})
}

var _ = io.EOF
