package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// blob is one file of an image, by digest.
type blob struct {
	digest    digest.Digest
	size      int64
	path      string
	mediaType string
	diffID    digest.Digest // layers only
	files     int           // layers only: entries in the tar
}

// image is an OCI image whose blobs are files in the bench's scratch space.
type image struct {
	layers       []blob
	config       blob
	manifest     []byte
	manifestType string
}

func (i *image) compressed() (n int64) {
	for _, l := range i.layers {
		n += l.size
	}
	return n
}

func (i *image) files() (n int) {
	for _, l := range i.layers {
		n += l.files
	}
	return n
}

// countingTar counts the entries written.
type countingTar struct {
	*tar.Writer
	n int
}

func (c *countingTar) WriteHeader(h *tar.Header) error {
	c.n++
	return c.Writer.WriteHeader(h)
}

// writeLayer streams a tar through gzip into dir, hashing the compressed
// bytes (the digest) and the tar (the diff ID) on the way.
func writeLayer(dir string, level int, fill func(tw *countingTar) error) (blob, error) {
	tmp, err := os.CreateTemp(dir, "layer-")
	if err != nil {
		return blob{}, err
	}
	defer tmp.Close()
	blobHash, tarHash := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, blobHash)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, level)
	if err != nil {
		return blob{}, err
	}
	tw := &countingTar{Writer: tar.NewWriter(io.MultiWriter(zw, tarHash))}
	if err := fill(tw); err != nil {
		return blob{}, err
	}
	if err := tw.Close(); err != nil {
		return blob{}, err
	}
	if err := zw.Close(); err != nil {
		return blob{}, err
	}
	if err := bw.Flush(); err != nil {
		return blob{}, err
	}
	b := blob{
		digest:    digest.NewDigest(digest.SHA256, blobHash),
		size:      cw.n,
		mediaType: ocispec.MediaTypeImageLayerGzip,
		diffID:    digest.NewDigest(digest.SHA256, tarHash),
		files:     tw.n,
	}
	b.path = filepath.Join(dir, b.digest.Encoded())
	return b, os.Rename(tmp.Name(), b.path)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

var fixedTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// finishImage writes the config and manifest of layers.
func finishImage(dir string, layers []blob) (*image, error) {
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS:   ocispec.RootFS{Type: "layers"},
		Config:   ocispec.ImageConfig{Cmd: []string{"/bin/sh"}},
	}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.diffID)
	}
	cb, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	config := blob{digest: digest.FromBytes(cb), size: int64(len(cb)), mediaType: ocispec.MediaTypeImageConfig}
	config.path = filepath.Join(dir, config.digest.Encoded())
	if err := os.WriteFile(config.path, cb, 0o644); err != nil {
		return nil, err
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: config.mediaType, Digest: config.digest, Size: config.size},
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: l.mediaType, Digest: l.digest, Size: l.size})
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &image{layers: layers, config: config, manifest: mb, manifestType: ocispec.MediaTypeImageManifest}, nil
}

// tarTree adds a host directory to a layer under its own absolute path
// (without the leading slash), with its parent directories, hard links
// as links, and only regular files, directories and symlinks.
func tarTree(tw *countingTar, root string, seen map[string]bool, links map[uint64]string) error {
	parts := strings.Split(strings.Trim(root, "/"), "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		if !seen[p] {
			seen[p] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755, ModTime: fixedTime}); err != nil {
				return err
			}
		}
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable: leave it out
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		name := strings.TrimPrefix(path, "/")
		var target string
		switch {
		case fi.Mode().IsDir(), fi.Mode().IsRegular():
		case fi.Mode()&fs.ModeSymlink != 0:
			if target, err = os.Readlink(path); err != nil {
				return nil
			}
		default:
			return nil
		}
		h, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return nil
		}
		h.Name, h.Uname, h.Gname = name, "", ""
		if fi.IsDir() {
			h.Name += "/"
			seen[name] = true
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			if first, ok := links[st.Ino]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
				return tw.WriteHeader(h)
			}
			links[st.Ino] = name
		}
		if !fi.Mode().IsRegular() {
			return tw.WriteHeader(h)
		}
		f, err := os.Open(path)
		if err != nil {
			delete(links, st.Ino)
			return nil
		}
		defer f.Close()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = io.CopyN(tw, f, h.Size)
		return err
	})
}

// realisticLayers are three layers of real files from this machine, like a
// language runtime image: about 13k files, tens of MB compressed.
var realisticLayers = [][]string{
	{"/usr/lib/python3.11", "/usr/share/zoneinfo"},
	{"/usr/share/perl", "/usr/share/perl5", "/usr/share/i18n"},
	{"/usr/include"},
}

func buildRealisticLayers(dir string, quick bool) ([]blob, error) {
	var out []blob
	for i, dirs := range realisticLayers {
		if quick && i == 2 {
			break
		}
		l, err := writeLayer(dir, gzip.DefaultCompression, func(tw *countingTar) error {
			seen, links := map[string]bool{}, map[uint64]string{}
			for _, d := range dirs {
				if _, err := os.Stat(d); err != nil {
					continue
				}
				if err := tarTree(tw, d, seen, links); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// variantLayer is a small top layer that makes one image's rootfs distinct.
func variantLayer(dir string, n int) (blob, error) {
	return writeLayer(dir, gzip.DefaultCompression, func(tw *countingTar) error {
		data := fmt.Sprintf("variant %d\n", n)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755, ModTime: fixedTime})
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/bench-variant", Mode: 0o644, Size: int64(len(data)), ModTime: fixedTime}); err != nil {
			return err
		}
		_, err := tw.Write([]byte(data))
		return err
	})
}

// buildSmallLayers is an image of 20 layers of 100 small files each: the
// per-layer cost of a pull, not its bytes.
func buildSmallLayers(dir string) (*image, error) {
	var layers []blob
	for l := 0; l < 20; l++ {
		b, err := writeLayer(dir, gzip.DefaultCompression, func(tw *countingTar) error {
			return addFiles(tw, fmt.Sprintf("layer%02d", l), "file-%03d", 100, func(f int) []byte {
				return []byte(strings.Repeat(fmt.Sprintf("layer %d file %d\n", l, f), 64))
			})
		})
		if err != nil {
			return nil, err
		}
		layers = append(layers, b)
	}
	return finishImage(dir, layers)
}

// addFiles writes directory dir and n files in it, named by format from
// their number.
func addFiles(tw *countingTar, dir, format string, n int, data func(f int) []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: fixedTime}); err != nil {
		return err
	}
	for f := 0; f < n; f++ {
		b := data(f)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dir + "/" + fmt.Sprintf(format, f), Mode: 0o644, Size: int64(len(b)), ModTime: fixedTime}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// buildLarge is 2000 small files in one layer and one incompressible file
// of bigSize in another.
func buildLarge(dir string, bigSize int64) (*image, error) {
	rng := rand.NewChaCha8([32]byte{1})
	small, err := writeLayer(dir, gzip.DefaultCompression, func(tw *countingTar) error {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "small/", Mode: 0o755, ModTime: fixedTime})
		for d := 0; d < 20; d++ {
			err := addFiles(tw, fmt.Sprintf("small/%02d", d), "file-%03d", 100, func(f int) []byte {
				data := make([]byte, 512+(d*100+f)%7680)
				rng.Read(data)
				return data
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	big, err := writeLayer(dir, gzip.BestSpeed, func(tw *countingTar) error {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "big/", Mode: 0o755, ModTime: fixedTime})
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big/random.bin", Mode: 0o644, Size: bigSize, ModTime: fixedTime}); err != nil {
			return err
		}
		_, err := io.CopyN(tw, rng, bigSize)
		return err
	})
	if err != nil {
		return nil, err
	}
	return finishImage(dir, []blob{small, big})
}

// images is the set every registry scenario uses, pushed once per run.
type images struct {
	reg       *registry
	realistic *image
	large     *image
	small     *image   // 20 layers of 100 files
	variants  []string // refs of ten distinct small-topped realistic images
	many      *image   // 100k small files (10k with -quick)
}

const (
	refRealistic = "bench/realistic"
	refLarge     = "bench/large"
	refSmall     = "bench/small-layers"
	refVariant   = "bench/variant"
	refMany      = "bench/many"
)

// loadImages builds and pushes the bench images on first use.
func (e *env) loadImages() (*images, error) {
	if e.imgs != nil {
		return e.imgs, nil
	}
	dir := filepath.Join(e.work, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf("building images from %s", strings.Join(flatten(realisticLayers), " "))
	reg, err := startRegistry(e.work)
	if err != nil {
		return nil, err
	}
	set := &images{reg: reg}
	base, err := buildRealisticLayers(dir, e.quick)
	if err != nil {
		return nil, err
	}
	if set.realistic, err = finishImage(dir, base); err != nil {
		return nil, err
	}
	bigSize := int64(1 << 30)
	if e.quick {
		bigSize = 128 << 20
	}
	if set.large, err = buildLarge(dir, bigSize); err != nil {
		return nil, err
	}
	if err := reg.push(refRealistic, "latest", set.realistic); err != nil {
		return nil, err
	}
	if err := reg.push(refLarge, "latest", set.large); err != nil {
		return nil, err
	}
	if set.small, err = buildSmallLayers(dir); err != nil {
		return nil, err
	}
	if err := reg.push(refSmall, "latest", set.small); err != nil {
		return nil, err
	}
	manyFiles := 100_000
	if e.quick {
		manyFiles = 10_000
	}
	if set.many, err = buildMany(dir, manyFiles); err != nil {
		return nil, err
	}
	if err := reg.push(refMany, "latest", set.many); err != nil {
		return nil, err
	}
	for i := 0; i < 10; i++ {
		top, err := variantLayer(dir, i)
		if err != nil {
			return nil, err
		}
		v, err := finishImage(dir, append(append([]blob{}, base...), top))
		if err != nil {
			return nil, err
		}
		tag := fmt.Sprintf("v%d", i)
		if err := reg.push(refVariant, tag, v); err != nil {
			return nil, err
		}
		set.variants = append(set.variants, reg.ref(refVariant, tag))
	}
	logf("realistic: %d layers, %d entries, %s compressed; large: %s compressed",
		len(set.realistic.layers), set.realistic.files(), mib(set.realistic.compressed()), mib(set.large.compressed()))
	e.imgs = set
	return set, nil
}

func flatten(ss [][]string) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s...)
	}
	sort.Strings(out)
	return out
}

// buildMany is one layer of n small files in directories of 100: the
// shape of a large language runtime or node_modules tree.
func buildMany(dir string, n int) (*image, error) {
	l, err := writeLayer(dir, gzip.BestSpeed, func(tw *countingTar) error {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "usr/", Mode: 0o755, ModTime: fixedTime})
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "usr/lib/", Mode: 0o755, ModTime: fixedTime})
		for d := 0; d < n/100; d++ {
			err := addFiles(tw, fmt.Sprintf("usr/lib/pkg%04d", d), "mod_%02d.py", 100, func(f int) []byte {
				return []byte(fmt.Sprintf("# package %d module %d\n", d, f))
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return finishImage(dir, []blob{l})
}
