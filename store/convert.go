package store

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/layers"
	"github.com/casfs/casfs/layers/merged"
	"github.com/casfs/casfs/lazy"
	"github.com/casfs/casfs/oci"
)

// ConvertOptions control image convert.
type ConvertOptions struct {
	// EStargz makes eStargz layers, ZstdChunked zstd:chunked ones (the
	// same TOC with zstd frames); neither, plain gzip ones (back to OCI).
	EStargz     bool `json:"estargz,omitempty"`
	ZstdChunked bool `json:"zstdChunked,omitempty"`
	// PrioritizedFiles go first in eStargz layers, before the prefetch
	// landmark, so that background completion fetches them first.
	PrioritizedFiles []string `json:"prioritizedFiles,omitempty"`
	// RegistryOptions reach the registries of lazily pulled layers that
	// must be fetched first.
	RegistryOptions
}

// ConvertImage writes a copy of the local image src (its manifest for this
// machine's platform) with every layer recompressed, and records it as dst.
func (s *Local) ConvertImage(ctx context.Context, src, dst string, opts ConvertOptions) (ImageInfo, error) {
	name, err := NormalizeName(dst)
	if err != nil {
		return ImageInfo{}, err
	}
	ctx, release, err := s.HoldLease(ctx, "convert "+src)
	if err != nil {
		return ImageInfo{}, err
	}
	defer release()
	rec, err := s.image(ctx, src)
	if err != nil {
		return ImageInfo{}, err
	}
	mans, err := s.imageManifests(ctx, rec.Target)
	if err != nil {
		return ImageInfo{}, err
	}
	if len(mans) == 0 {
		return ImageInfo{}, fmt.Errorf("image %s has no manifest: %w", rec.Name, errdefs.ErrNotFound)
	}
	md := s.pickManifest(mans)
	var m ocispec.Manifest
	if _, err := s.readDocument(ctx, md.Digest, &m); err != nil {
		return ImageInfo{}, err
	}
	var cfg map[string]json.RawMessage
	if _, err := s.readDocument(ctx, m.Config.Digest, &cfg); err != nil {
		return ImageInfo{}, err
	}
	var diffIDs []digest.Digest
	var newLayers []ocispec.Descriptor
	for _, l := range m.Layers {
		if !oci.IsLayer(l.MediaType) {
			return ImageInfo{}, fmt.Errorf("layer %s: media type %q cannot be converted: %w", l.Digest, l.MediaType, errdefs.ErrNotImplemented)
		}
		if _, err := s.blobs.Info(ctx, l.Digest); err != nil {
			if err := s.fetchRecorded(ctx, opts.RegistryOptions, l.Digest); err != nil {
				return ImageInfo{}, fmt.Errorf("layer %s: %w", l.Digest, err)
			}
		}
		nl, diffID, err := s.convertLayer(ctx, l, opts)
		if err != nil {
			return ImageInfo{}, fmt.Errorf("convert layer %s: %w", l.Digest, err)
		}
		newLayers = append(newLayers, nl)
		diffIDs = append(diffIDs, diffID)
	}
	var rootfs ocispec.RootFS
	if err := json.Unmarshal(cfg["rootfs"], &rootfs); err != nil {
		return ImageInfo{}, fmt.Errorf("config %s: rootfs: %v: %w", m.Config.Digest, err, errdefs.ErrInvalidArgument)
	}
	rootfs.DiffIDs = diffIDs
	cfg["rootfs"], _ = json.Marshal(rootfs)
	cfgBytes, _ := json.Marshal(cfg)
	cfgDesc, err := s.putDocument(ctx, ocispec.MediaTypeImageConfig, cfgBytes)
	if err != nil {
		return ImageInfo{}, err
	}
	nm := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: cfgDesc, Layers: newLayers, Annotations: m.Annotations}
	mBytes, _ := json.Marshal(nm)
	mDesc, err := s.putDocument(ctx, ocispec.MediaTypeImageManifest, mBytes)
	if err != nil {
		return ImageInfo{}, err
	}
	il, err := s.imageLayers(ctx, mDesc)
	if err != nil {
		return ImageInfo{}, err
	}
	if err := s.unpack(ctx, il, nil); err != nil {
		return ImageInfo{}, err
	}
	out, err := s.recordImage(ctx, name, mDesc)
	if err != nil {
		return ImageInfo{}, err
	}
	s.changed()
	return s.imageInfo(ctx, out), nil
}

// putDocument stores a JSON document with its record.
func (s *Local) putDocument(ctx context.Context, mediaType string, b []byte) (ocispec.Descriptor, error) {
	d := digest.FromBytes(b)
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
	if err := s.putBlob(ctx, desc, bytes.NewReader(b)); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}

// putBlob ingests r as desc (into the caller's lease) and records its media type.
func (s *Local) putBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if err := index.AddToLease(ctx, []digest.Digest{desc.Digest}); err != nil {
		return err
	}
	if _, err := s.Ingest(ctx, "convert-"+desc.Digest.String(), r, IngestOptions{Expected: desc.Digest, Size: desc.Size}); err != nil {
		return err
	}
	db, err := s.Index()
	if err != nil {
		return err
	}
	_, err = db.Blobs().Update(ctx, desc.Digest.String(), func(b *index.Blob) error {
		b.MediaType = desc.MediaType
		return nil
	})
	return err
}

// convertLayer recompresses one local layer: its uncompressed tar, without
// eStargz metadata entries, goes into a temporary file under the store
// root, then through the estargz builder or plain gzip.
func (s *Local) convertLayer(ctx context.Context, l ocispec.Descriptor, opts ConvertOptions) (ocispec.Descriptor, digest.Digest, error) {
	ra, err := s.blobs.ReaderAt(ctx, l.Digest)
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	defer ra.Close()
	rc, err := layers.Decompress(l.MediaType, io.NewSectionReader(ra, 0, ra.Size()))
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(s.root, ".convert-*")
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	if err := copyTarWithout(io.MultiWriter(tmp, h), rc); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	tarSR := io.NewSectionReader(tmp, 0, size)
	out, err := os.CreateTemp(s.root, ".convert-*")
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip}
	diffID := digest.NewDigest(digest.SHA256, h)
	bh := sha256.New()
	w := io.MultiWriter(out, bh)
	if opts.EStargz || opts.ZstdChunked {
		eo := []estargz.Option{estargz.WithContext(ctx)}
		if len(opts.PrioritizedFiles) > 0 {
			eo = append(eo, estargz.WithPrioritizedFiles(opts.PrioritizedFiles))
		}
		desc.Annotations = map[string]string{}
		if opts.ZstdChunked {
			// The compressor writes the zstd:chunked annotations
			// (compressed TOC's checksum and position) into Metadata.
			desc.MediaType = ocispec.MediaTypeImageLayerZstd
			eo = append(eo, estargz.WithCompression(struct {
				*zstdchunked.Compressor
				*zstdchunked.Decompressor
			}{&zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault, Metadata: desc.Annotations}, new(zstdchunked.Decompressor)}))
		}
		b, err := estargz.Build(tarSR, eo...)
		if err != nil {
			return ocispec.Descriptor{}, "", err
		}
		_, err = io.Copy(w, b)
		b.Close()
		if err != nil {
			return ocispec.Descriptor{}, "", err
		}
		diffID = b.DiffID()
		desc.Annotations[lazy.TOCDigestAnnotation] = b.TOCDigest().String()
	} else {
		zw := gzip.NewWriter(w)
		if _, err := io.Copy(zw, tarSR); err != nil {
			return ocispec.Descriptor{}, "", err
		}
		if err := zw.Close(); err != nil {
			return ocispec.Descriptor{}, "", err
		}
	}
	n, err := out.Seek(0, io.SeekCurrent)
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	desc.Digest, desc.Size = digest.NewDigest(digest.SHA256, bh), n
	if err := s.putBlob(ctx, desc, io.NewSectionReader(out, 0, n)); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	return desc, diffID, nil
}

// copyTarWithout copies a tar stream without the eStargz metadata entries,
// so that converting either way yields the tree of the source image.
func copyTarWithout(w io.Writer, r io.Reader) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return fmt.Errorf("read layer tar: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		if hdr.Typeflag == tar.TypeReg && merged.IsEStargzMetadata(path.Clean(strings.TrimLeft(hdr.Name, "/"))) {
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}
