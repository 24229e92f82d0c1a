package fusefs

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// view is one consistent snapshot of what the Source lists. It is immutable
// once built; Refresh swaps in a new one and tells the kernel what changed.
type view struct {
	at     time.Time                      // shown as the mtime of the listing directories
	blobs  map[string]map[string]blobMeta // algorithm -> hex -> record
	images *imgDir
	rootfs map[string]bool

	namesMu     sync.Mutex
	sortedBlobs map[string][]string // algorithm -> sorted hex names, see blobNames
}

// blobMeta is what the listing keeps of one blob record: its size and its
// time in Unix nanoseconds (zero when the record has none).
type blobMeta struct {
	size  int64
	mtime int64
}

func metaOf(b BlobInfo) blobMeta {
	m := blobMeta{size: b.Size}
	if !b.ModTime.IsZero() {
		m.mtime = b.ModTime.UnixNano()
	}
	return m
}

func (m blobMeta) modTime() time.Time { return time.Unix(0, m.mtime) }

// imgDir is one directory under images/: a repository path element, an
// image (tag or digest) directory, or both at once.
type imgDir struct {
	kids  map[string]*imgDir
	image *ImageInfo
}

func loadView(ctx context.Context, src Source, log *slog.Logger) (*view, error) {
	blobs, err := src.Blobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	images, err := src.Images(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	v := &view{
		at:     time.Now(),
		blobs:  map[string]map[string]blobMeta{digest.SHA256.String(): {}},
		images: &imgDir{},
		rootfs: map[string]bool{},
	}
	for _, b := range blobs {
		if b.Digest.Validate() != nil {
			log.Warn("fuse: skipping blob with a malformed digest", "digest", string(b.Digest))
			continue
		}
		alg := b.Digest.Algorithm().String()
		if v.blobs[alg] == nil {
			v.blobs[alg] = map[string]blobMeta{}
		}
		v.blobs[alg][b.Digest.Encoded()] = metaOf(b)
	}
	for i := range images {
		img := &images[i]
		parts, ok := imagePath(img.Name)
		if !ok {
			log.Warn("fuse: skipping image with a name that cannot be a path", "name", img.Name)
			continue
		}
		d := v.images
		for _, p := range parts {
			if d.kids == nil {
				d.kids = map[string]*imgDir{}
			}
			c := d.kids[p]
			if c == nil {
				c = &imgDir{}
				d.kids[p] = c
			}
			d = c
		}
		d.image = img
		if img.RootfsID != "" && validName(img.RootfsID) {
			v.rootfs[img.RootfsID] = true
		}
	}
	return v, nil
}

// imagePath splits a reference into its directory path under images/:
// registry, repository elements, then the tag; a digest reference keeps
// "<last element>@<digest>" as its final directory.
func imagePath(name string) ([]string, bool) {
	slash := strings.LastIndex(name, "/")
	last := name[slash+1:]
	var parts []string
	if slash >= 0 {
		parts = strings.Split(name[:slash], "/")
	}
	switch {
	case strings.Contains(last, "@"):
		// "repo:tag@sha256:..." pins a digest; the digest is what shows.
		repo, dgst, _ := strings.Cut(last, "@")
		repo, _, _ = strings.Cut(repo, ":")
		parts = append(parts, repo+"@"+dgst)
	case strings.Contains(last, ":"):
		repo, tag, _ := strings.Cut(last, ":")
		parts = append(parts, repo, tag)
	default:
		parts = append(parts, last, "latest")
	}
	for _, p := range parts {
		if !validName(p) {
			return nil, false
		}
	}
	return parts, true
}

func validName(p string) bool {
	return p != "" && p != "." && p != ".." && !strings.ContainsAny(p, "/\x00") && len(p) <= 255
}

func (v *view) imageDir(path []string) *imgDir {
	d := v.images
	for _, p := range path {
		d = d.kids[p]
		if d == nil {
			return nil
		}
	}
	return d
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sameImage reports whether two image records show the same files.
func sameImage(a, b *ImageInfo) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Target.Digest != b.Target.Digest || a.Manifest != b.Manifest || a.Config != b.Config ||
		a.RootfsID != b.RootfsID || len(a.Layers) != len(b.Layers) {
		return false
	}
	for i := range a.Layers {
		if a.Layers[i] != b.Layers[i] {
			return false
		}
	}
	return true
}
