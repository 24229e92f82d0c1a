package merged

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	opaqueXattr  = "trusted.overlay.opaque"
	overlayXattr = "trusted.overlay."
)

// readXattrs returns every xattr of p except overlayfs' private ones, and
// whether p carries the opaque marker.
func readXattrs(p string) (xs []Xattr, opaque bool, err error) {
	names, err := listXattrs(p)
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
