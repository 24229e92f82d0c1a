package testimage

import (
	"bytes"
	"maps"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"
)

// The tests of a package build the same layers many times (the busybox base
// of most images above all), and compressing a layer costs seconds of CPU
// under the race detector. A layer's compressed form depends only on its
// tar and its compression settings, so each is compressed once per process
// and every later build gets a copy of the same bytes: a test may change
// its image's blobs without touching another test's.
var compressed sync.Map // compressKey -> *compressedLayer

// cacheMaxTar is the largest tar kept: larger layers are made for one test
// (disk-filling images, say) and would only hold memory.
const cacheMaxTar = 16 << 20

type compressKey struct {
	tar         digest.Digest
	compression string
	chunkSize   int
	prioritized string // PrioritizedFiles, NUL-separated
}

type compressedLayer struct {
	once        sync.Once
	blob        []byte
	diffID      digest.Digest
	annotations map[string]string
	err         error
}

// compressLayer compresses raw, the tar of l, as l says: the blob, the
// diff ID (estargz rewrites the tar) and the descriptor's annotations.
func compressLayer(l Layer, raw []byte) ([]byte, digest.Digest, map[string]string, error) {
	if len(raw) > cacheMaxTar {
		return compressTar(l, raw)
	}
	key := compressKey{digest.FromBytes(raw), l.Compression, l.ChunkSize, strings.Join(l.PrioritizedFiles, "\x00")}
	v, _ := compressed.LoadOrStore(key, &compressedLayer{})
	c := v.(*compressedLayer)
	c.once.Do(func() { c.blob, c.diffID, c.annotations, c.err = compressTar(l, raw) })
	if c.err != nil {
		return nil, "", nil, c.err
	}
	return bytes.Clone(c.blob), c.diffID, maps.Clone(c.annotations), nil
}

func compressTar(l Layer, raw []byte) ([]byte, digest.Digest, map[string]string, error) {
	switch l.Compression {
	case "estargz", "zstdchunked":
		return buildEStargz(l, raw)
	case "zstd":
		b, err := zstdBytes(raw)
		return b, digest.FromBytes(raw), nil, err
	case "none":
		return raw, digest.FromBytes(raw), nil, nil
	default:
		b, err := Gzip(raw)
		return b, digest.FromBytes(raw), nil, err
	}
}
