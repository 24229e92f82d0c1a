package merged

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	opaqueXattr  = "trusted.overlay.opaque"
	overlayXattr = "trusted.overlay."
)

// readXattrs returns every xattr of p except overlayfs' private ones, and
// whether p carries the opaque marker.
func readXattrs(dirfd int, name, p string) (xs []Xattr, opaque bool, err error) {
	names, err := listXattrs(dirfd, name, p)
	if err != nil {
		return nil, false, err
	}
	for _, name := range names {
		if !strings.HasPrefix(name, overlayXattr) {
			v, err := getXattr(p, name)
			if errors.Is(err, unix.ENODATA) {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, false, err
			}
			xs = append(xs, Xattr{Name: name, Value: v})
			continue
		}
		if name == opaqueXattr {
			v, err := getXattr(p, name)
			if err != nil && !errors.Is(err, unix.ENODATA) {
				return nil, false, err
			}
			opaque = string(v) == "y"
		}
	}
	return xs, opaque, nil
}

// listXattrs lists the xattr names of name in dirfd, which is p: with
// listxattrat (Linux 6.13) where the kernel has it, which needs no path
// lookup, else llistxattr(p).
func listXattrs(dirfd int, name, p string) ([]string, error) {
	buf := make([]byte, 256)
	for {
		sz, err := listXattrsAt(dirfd, name, p, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err = listXattrsAt(dirfd, name, p, nil)
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

// noListxattrat is set once the kernel said it lacks listxattrat.
var noListxattrat atomic.Bool

func listXattrsAt(dirfd int, name, p string, buf []byte) (int, error) {
	if !noListxattrat.Load() {
		namep, err := unix.BytePtrFromString(name)
		if err != nil {
			return 0, err
		}
		var bufp unsafe.Pointer
		if len(buf) > 0 {
			bufp = unsafe.Pointer(&buf[0])
		}
		n, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(namep)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(bufp), uintptr(len(buf)), 0)
		if errno != unix.ENOSYS {
			if errno != 0 {
				return 0, errno
			}
			return int(n), nil
		}
		noListxattrat.Store(true)
	}
	return unix.Llistxattr(p, buf)
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
