package store

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
)

// Content import and image import read tars through one reader: an entry
// type one refuses, the other refuses with the same error, and neither
// leaves a blob behind. Before they shared it, content import named a hard
// link "is not a regular file" while image import listed what it accepts.
func TestImportsRefuseEntryTypesAlike(t *testing.T) {
	t.Parallel()
	blob := []byte("a blob that comes first")
	blobName := "blobs/sha256/" + digest.FromBytes(blob).Encoded()
	cases := []struct {
		name string
		hdr  tar.Header
		want string
	}{
		{"hard link", tar.Header{Name: "blobs/sha256/" + strings.Repeat("a", 64), Typeflag: tar.TypeLink, Linkname: blobName}, "is not a regular file, directory or symlink"},
		{"char device", tar.Header{Name: "blobs/sha256/" + strings.Repeat("b", 64), Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, "is not a regular file, directory or symlink"},
		{"fifo", tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}, "is not a regular file, directory or symlink"},
		{"symlink as a blob", tar.Header{Name: "blobs/sha256/" + strings.Repeat("c", 64), Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}, "is not a regular file (it is a symlink) where a file must be"},
		{"absolute name", tar.Header{Name: "/etc/evil", Typeflag: tar.TypeReg, Size: 1}, "is outside the archive"},
		{"dot-dot name", tar.Header{Name: "blobs/../../evil", Typeflag: tar.TypeReg, Size: 1}, "is outside the archive"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			if err := tw.WriteHeader(&tar.Header{Name: blobName, Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(len(blob))}); err != nil {
				t.Fatal(err)
			}
			tw.Write(blob)
			hdr := tc.hdr
			if err := tw.WriteHeader(&hdr); err != nil {
				t.Fatal(err)
			}
			if hdr.Size > 0 {
				tw.Write(bytes.Repeat([]byte("x"), int(hdr.Size)))
			}
			if err := tw.Close(); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			s := openTemp(t)
			_, contentErr := s.ImportContent(ctx, bytes.NewReader(buf.Bytes()))
			_, imageErr := s.ImportImages(ctx, bytes.NewReader(buf.Bytes()), ImportOptions{NoUnpack: true})
			for what, err := range map[string]error{"content import": contentErr, "image import": imageErr} {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: got %v, want %q (invalid argument)", what, err, tc.want)
				}
			}
			if contentErr != nil && imageErr != nil && contentErr.Error() != imageErr.Error() {
				t.Errorf("the two imports disagree:\ncontent: %v\nimage:   %v", contentErr, imageErr)
			}
			if infos, err := s.ListContent(ctx); err != nil || len(infos) != 0 {
				t.Errorf("store holds %d blobs after refused imports (%v)", len(infos), err)
			}
		})
	}
}
