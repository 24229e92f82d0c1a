// Package layers turns OCI layer blobs into overlay snapshots: it knows the
// layer compressions (the media types are package oci's), applies a tar diff onto a
// snapshot directory in overlayfs' own encoding (whiteouts as 0:0 character
// devices, opaque directories as an xattr), keeps the snapshots keyed by
// chain ID, and mounts stacks of them with the kernel's overlayfs.
package layers

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// Decompress returns the uncompressed tar stream of a layer blob of the
// given media type. A truncated stream surfaces as an error wrapping
// io.ErrUnexpectedEOF when it is read; an unknown media type is an error
// wrapping errdefs.ErrNotImplemented.
func Decompress(mediaType string, r io.Reader) (io.ReadCloser, error) {
	c, ok := oci.LayerCompression(mediaType)
	if !ok {
		return nil, fmt.Errorf("decompress layer: media type %q is not a supported layer type: %w", mediaType, errdefs.ErrNotImplemented)
	}
	switch c {
	case oci.Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("decompress layer: gzip header: %w", eofIsUnexpected(err))
		}
		return &gzipReader{zr}, nil
	case oci.Zstd:
		// One goroutine: layers are unpacked a few at a time. The
		// decoder's default window limit bounds what a hostile frame can
		// make us allocate.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("decompress layer: zstd: %w", err)
		}
		return &zstdReader{zr}, nil
	default:
		return io.NopCloser(r), nil
	}
}

// eofIsUnexpected turns a bare io.EOF (stream ended where more was due)
// into io.ErrUnexpectedEOF so that callers never mistake it for success.
func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

type gzipReader struct{ zr *gzip.Reader }

func (g *gzipReader) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("decompress gzip layer: %w", err)
	}
	return n, err
}

func (g *gzipReader) Close() error { return g.zr.Close() }

type zstdReader struct{ zr *zstd.Decoder }

func (z *zstdReader) Read(p []byte) (int, error) {
	n, err := z.zr.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("decompress zstd layer: %w", err)
	}
	return n, err
}

func (z *zstdReader) Close() error { z.zr.Close(); return nil }
