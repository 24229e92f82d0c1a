package archive

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
)

// Writer is the one writer of archives: an OCI image layout as a tar
// (metadata first, then each blob once), a tar of blobs alone (WriteBlob
// without WriteMetadata: `casfs content export`), or a layout directory
// (TarDir). Every member carries the same mode, time and format, so the
// same content always makes the same archive. Nothing is buffered beyond
// what tar needs.
type Writer struct {
	tw      *tar.Writer
	written map[digest.Digest]bool
}

// NewWriter starts an archive on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{tw: tar.NewWriter(w), written: map[digest.Digest]bool{}}
}

// epoch is every member's modification time, so that the same images
// always make the same archive.
var epoch = time.Unix(0, 0)

// WriteMetadata writes oci-layout, index.json and, when docker is not nil,
// docker's manifest.json, then the blobs directories.
func (w *Writer) WriteMetadata(idx ocispec.Index, docker []DockerManifest) error {
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := w.file(layoutFile, layout); err != nil {
		return err
	}
	if idx.SchemaVersion == 0 {
		idx.SchemaVersion = 2
	}
	if idx.MediaType == "" {
		idx.MediaType = ocispec.MediaTypeImageIndex
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := w.file(indexFile, b); err != nil {
		return err
	}
	if docker != nil {
		b, err := json.Marshal(docker)
		if err != nil {
			return err
		}
		if err := w.file(dockerManifestFile, b); err != nil {
			return err
		}
	}
	for _, dir := range []string{"blobs/", blobsDir} {
		if err := w.header(tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return err
		}
	}
	return nil
}

// header writes one member's header with the time and format every member
// shares.
func (w *Writer) header(h tar.Header) error {
	h.ModTime, h.Format = epoch, tar.FormatPAX
	return w.tw.WriteHeader(&h)
}

func (w *Writer) file(name string, data []byte) error {
	if err := w.header(tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(len(data))}); err != nil {
		return err
	}
	_, err := w.tw.Write(data)
	return err
}

// WriteBlob writes blobs/sha256/<hex> from r, which must hold exactly size
// bytes that hash to d: an archive never carries bytes that do not match
// their name. A blob written before is skipped (r is not read).
func (w *Writer) WriteBlob(d digest.Digest, size int64, r io.Reader) error {
	if w.written[d] {
		return nil
	}
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("blob %q: not a sha256 digest: %w", d, errdefs.ErrInvalidArgument)
	}
	if err := w.header(tar.Header{Name: BlobPath(d), Typeflag: tar.TypeReg, Mode: 0o444, Size: size}); err != nil {
		return err
	}
	v := d.Verifier()
	n, err := io.Copy(io.MultiWriter(w.tw, v), io.LimitReader(r, size))
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if n != size {
		return fmt.Errorf("blob %s: %d of %d bytes: %w", d, n, size, errdefs.ErrFailedPrecondition)
	}
	if !v.Verified() {
		return fmt.Errorf("blob %s: content does not match its digest: %w", d, errdefs.ErrDigestMismatch)
	}
	w.written[d] = true
	return nil
}

// WriteBytes writes a blob held in memory.
func (w *Writer) WriteBytes(b []byte) (digest.Digest, error) {
	d := digest.FromBytes(b)
	return d, w.WriteBlob(d, int64(len(b)), bytes.NewReader(b))
}

// Close ends the tar stream (it does not close the underlying writer).
func (w *Writer) Close() error { return w.tw.Close() }
