package testimage

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// FromDir returns the files under dir (not dir itself) with paths relative
// to it, in lexical order: types, permissions, owners, contents, link
// targets, device numbers and xattrs. Files sharing an inode after the first
// become hard links to it. ModTime is left zero (DefaultModTime in a
// layer), so that images made from a directory do not change with its
// timestamps.
func FromDir(dir string) ([]File, error) {
	var files []File
	seen := map[[2]uint64]string{} // (dev, ino) -> first path
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		f := File{Path: filepath.ToSlash(rel), Mode: fi.Mode()}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok {
			f.Uid, f.Gid = int(st.Uid), int(st.Gid)
		}
		if x, err := xattrs(p); err == nil {
			f.Xattrs = x
		}
		switch {
		case fi.Mode().IsRegular():
			if ok && st.Nlink > 1 {
				key := [2]uint64{uint64(st.Dev), st.Ino}
				if first, dup := seen[key]; dup {
					f.Hardlink, f.Linkname, f.Mode = true, first, fi.Mode().Perm()
					break
				}
				seen[key] = f.Path
			}
			if f.Data, err = os.ReadFile(p); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			if f.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeDevice != 0 && ok:
			f.Devmajor, f.Devminor = int64(unix.Major(uint64(st.Rdev))), int64(unix.Minor(uint64(st.Rdev)))
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("files of %s: %w", dir, err)
	}
	return files, nil
}

func xattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return nil, err
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, buf); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range splitNul(buf[:sz]) {
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			continue
		}
		val := make([]byte, vsz)
		if vsz, err = unix.Lgetxattr(p, name, val); err != nil {
			continue
		}
		out[name] = string(val[:vsz])
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
