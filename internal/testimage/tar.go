package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"sort"
	"time"
)

// defaultModTime is the mtime of every entry whose File.ModTime is zero, and
// the creation time of every image.
var defaultModTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// File is one tar entry. Mode carries the type (os.ModeDir, os.ModeSymlink,
// os.ModeDevice, os.ModeDevice|os.ModeCharDevice, os.ModeNamedPipe) as well
// as permission, setuid, setgid and sticky bits; a zero type is a regular
// file. Hardlink makes the entry a hard link to Linkname.
type File struct {
	Path               string
	Mode               os.FileMode
	Uid, Gid           int
	Data               []byte
	Linkname           string
	Hardlink           bool
	Devmajor, Devminor int64
	Xattrs             map[string]string
	ModTime            time.Time
}

// Dir, Reg and Symlink are shorthands for the common entries.
func Dir(path string, perm os.FileMode) File { return File{Path: path, Mode: os.ModeDir | perm} }

// Reg is a regular file.
func Reg(path string, perm os.FileMode, data string) File {
	return File{Path: path, Mode: perm, Data: []byte(data)}
}

// Symlink is a symbolic link at path pointing to target.
func Symlink(path, target string) File {
	return File{Path: path, Mode: os.ModeSymlink | 0o777, Linkname: target}
}

// Whiteout is the OCI whiteout entry that deletes dir/name in lower layers.
func Whiteout(dir, name string) File {
	p := ".wh." + name
	if dir != "" {
		p = dir + "/" + p
	}
	return File{Path: p, Mode: 0o644}
}

// Opaque is the OCI opaque-directory marker for dir.
func Opaque(dir string) File {
	p := ".wh..wh..opq"
	if dir != "" {
		p = dir + "/" + p
	}
	return File{Path: p, Mode: 0o644}
}

// tarFiles writes files as an uncompressed tar stream in the given order. Names
// are written as they are: hostile names such as "../x" or "/etc/passwd"
// and whiteouts pass through untouched.
func tarFiles(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr, err := header(f)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header %q: %w", f.Path, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("tar data %q: %w", f.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	return buf.Bytes(), nil
}

// RawTar is tarFiles for test code: it panics on a File that tar cannot encode
// (such as a negative uid), which is a bug in the test, not input.
func RawTar(files []File) []byte {
	b, err := tarFiles(files)
	if err != nil {
		panic("testimage.RawTar: " + err.Error())
	}
	return b
}

// sortedFiles returns a copy of files ordered by path, stable for equal
// paths, so that a layer's bytes do not depend on how its spec was built.
func sortedFiles(files []File) []File {
	out := append([]File(nil), files...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func header(f File) (*tar.Header, error) {
	mt := f.ModTime
	if mt.IsZero() {
		mt = defaultModTime
	}
	h := &tar.Header{
		Name:     f.Path,
		Mode:     int64(f.Mode.Perm()),
		Uid:      f.Uid,
		Gid:      f.Gid,
		ModTime:  mt,
		Linkname: f.Linkname,
	}
	if f.Mode&os.ModeSetuid != 0 {
		h.Mode |= 0o4000
	}
	if f.Mode&os.ModeSetgid != 0 {
		h.Mode |= 0o2000
	}
	if f.Mode&os.ModeSticky != 0 {
		h.Mode |= 0o1000
	}
	switch {
	case f.Hardlink:
		h.Typeflag = tar.TypeLink
	case f.Mode&os.ModeDir != 0:
		h.Typeflag = tar.TypeDir
	case f.Mode&os.ModeSymlink != 0:
		h.Typeflag = tar.TypeSymlink
	case f.Mode&os.ModeDevice != 0 && f.Mode&os.ModeCharDevice != 0:
		h.Typeflag = tar.TypeChar
	case f.Mode&os.ModeDevice != 0:
		h.Typeflag = tar.TypeBlock
	case f.Mode&os.ModeNamedPipe != 0:
		h.Typeflag = tar.TypeFifo
	case f.Mode&os.ModeSocket != 0:
		return nil, fmt.Errorf("tar entry %q: sockets cannot be stored in tar", f.Path)
	default:
		h.Typeflag = tar.TypeReg
		h.Size = int64(len(f.Data))
	}
	if h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock {
		h.Devmajor, h.Devminor = f.Devmajor, f.Devminor
	}
	if len(f.Xattrs) > 0 {
		h.PAXRecords = make(map[string]string, len(f.Xattrs))
		for k, v := range f.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		h.Format = tar.FormatPAX
	}
	return h, nil
}
