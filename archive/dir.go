package archive

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/casfs/casfs/errdefs"
)

// TarDir writes the OCI image layout directory dir to w as a tar, so that a
// directory is imported by the same checked path as an archive. Symlinks are
// written as symlinks (Read refuses them where blobs must be); other special
// files are refused.
func TarDir(ctx context.Context, dir string, out io.Writer) error {
	w := NewWriter(out)
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := de.Info()
		if err != nil {
			return err
		}
		mode := int64(fi.Mode().Perm())
		switch {
		case fi.IsDir():
			return w.header(tar.Header{Name: rel + "/", Typeflag: tar.TypeDir, Mode: mode})
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return w.header(tar.Header{Name: rel, Typeflag: tar.TypeSymlink, Linkname: target, Mode: mode})
		case !fi.Mode().IsRegular():
			return fmt.Errorf("%s is not a regular file: %w", p, errdefs.ErrInvalidArgument)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := w.header(tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: mode, Size: fi.Size()}); err != nil {
			return err
		}
		_, err = io.Copy(w.tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("read layout %s: %w", dir, err)
	}
	return w.Close()
}
