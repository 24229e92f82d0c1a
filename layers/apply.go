package layers

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/casfs/casfs/errdefs"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Defaults for ApplyOptions' limits. A real layer seldom unpacks past a
// few GiB or a few hundred thousand entries, while a decompression or tar
// bomb grows without end from a few MB: the defaults leave room for the
// largest real images and stop a bomb before it fills a disk or the memory
// that per-entry bookkeeping takes. Users lower or raise them per command.
//
// Real layers compress 2-10 times (text a little more); gzip of zeros
// compresses about 1000 times. Past RatioFloor bytes, a compressed layer
// may unpack to at most DefaultMaxRatio times the compressed bytes read so
// far, which stops a 4 MB bomb at 1 GiB, not at 32 GiB.
const (
	defaultMaxBytes      int64 = 32 << 30
	DefaultMaxImageBytes int64 = 32 << 30
	DefaultMaxEntries    int64 = 1_000_000
	DefaultMaxRatio      int64 = 100
	RatioFloor           int64 = 1 << 30
)

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// Lowers are the fs directories of the layers below, top-most first.
	// They are read (never written) to resolve hardlinks whose target only
	// exists below and to give directories that the tar creates implicitly
	// the attributes they have below.
	Lowers []string
	// MaxBytes bounds the uncompressed tar bytes read (0: defaultMaxBytes).
	MaxBytes int64
	// MaxEntries bounds the number of tar entries (0: DefaultMaxEntries).
	MaxEntries int64
	// MaxImageBytes bounds the uncompressed bytes of all the layers one
	// image unpacks (0: DefaultMaxImageBytes). Apply charges the budget
	// that ImageContext put in its context; without one it is not counted.
	MaxImageBytes int64
	// MaxRatio bounds uncompressed bytes per compressed byte of a layer
	// past RatioFloor (0: DefaultMaxRatio). Only Snapshotter.Unpack, which
	// sees the compressed blob, applies it.
	MaxRatio int64

	compressed *atomic.Int64 // compressed bytes read, set by Unpack
	ratioFloor int64         // 0: RatioFloor (tests lower it)

	// lowersFn, when set, stands for Lowers: the layers below are still
	// being unpacked, and it returns them once they are complete. Apply
	// calls it only when it first needs to look below.
	lowersFn func() ([]string, error)
	// pinned: the caller checks the diff ID, which covers every byte of
	// the stream, so a cut is caught there (Snapshotter.extract).
	pinned bool
}

type imageBudgetKey struct{}

// imageBudget counts the uncompressed bytes the layers of one image read,
// shared by Applies that may run at once.
type imageBudget struct {
	max  int64
	used atomic.Int64
}

// ImageContext returns ctx with a fresh budget of o.MaxImageBytes that
// every Apply under it charges (a failed Apply gives its bytes back): one
// image's unpack runs under one. A ctx that carries a budget keeps it, so
// that an unpack finishing what an earlier one began charges the same.
func (o ApplyOptions) ImageContext(ctx context.Context) context.Context {
	if _, ok := ctx.Value(imageBudgetKey{}).(*imageBudget); ok {
		return ctx // the image's layers share the budget already there
	}
	max := o.MaxImageBytes
	if max <= 0 {
		max = DefaultMaxImageBytes
	}
	return context.WithValue(ctx, imageBudgetKey{}, &imageBudget{max: max})
}

// ApplyResult describes an applied layer.
type ApplyResult struct {
	DiffID  digest.Digest // sha256 of every uncompressed byte read, to EOF
	Size    int64         // uncompressed bytes read
	Entries int64         // tar entries, whiteouts included
}

// Apply reads the uncompressed tar layer r to its end and writes its changes
// into dir, an empty snapshot directory, in overlayfs' encoding: a whiteout
// becomes a 0:0 character device, an opaque marker the xattr
// trusted.overlay.opaque=y on its directory. Whiteouts only hide what the
// lower layers have, whatever their position in the tar relative to this
// layer's own entries.
//
// Nothing outside dir is created, changed or followed: names are taken
// relative to dir, names escaping it are refused, parent components that
// are symlinks are refused (never followed), and hardlinks must point
// inside the layer. A hardlink whose target exists only in a lower layer
// gets a copy of that file (as containerd does, since a link cannot cross
// layers).
func Apply(ctx context.Context, dir string, r io.Reader, opts ApplyOptions) (ApplyResult, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = defaultMaxBytes
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply layer: open %s: %w", dir, err)
	}
	defer unix.Close(root)

	cr := &countingReader{r: r, h: sha256.New(), max: opts.MaxBytes}
	cr.image, _ = ctx.Value(imageBudgetKey{}).(*imageBudget)
	if opts.compressed != nil {
		cr.compressed, cr.ratio, cr.floor = opts.compressed, opts.MaxRatio, opts.ratioFloor
		if cr.ratio <= 0 {
			cr.ratio = DefaultMaxRatio
		}
		if cr.floor <= 0 {
			cr.floor = RatioFloor
		}
	}
	a := &applier{
		root:      root,
		dir:       dir,
		lowers:    opts.Lowers,
		hasLowers: len(opts.Lowers) > 0 || opts.lowersFn != nil,
		lowersFn:  opts.lowersFn,
		whiteouts: map[string]bool{},
		opaques:   map[string]bool{},
		implicit:  map[string]bool{},
		copiedUp:  map[string]bool{},
		dirTimes:  map[string][]unix.Timespec{},
		lastDirFd: -1,
	}
	// A default ACL, not the umask, masks the mode of a file created
	// under it: then, or with the umask unknown, every file takes its chmod.
	umask, known := processUmask()
	a.umask, a.exactCreate = umask, known && !hasDefaultACL(dir)
	defer a.forgetDir()
	fail := func(err error) (ApplyResult, error) {
		if cr.err != nil {
			err = cr.err // the limit, not whatever tar made of it
		} else if a.lowerErr != nil {
			err = a.lowerErr // what was made of no lowers is moot
		}
		if cr.image != nil {
			// Only applied layers count: a retry of this one starts afresh.
			cr.image.used.Add(-cr.n)
		}
		return ApplyResult{}, fmt.Errorf("apply layer: %w", err)
	}
	tr := tar.NewReader(cr)
	var entries int64
	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		before := cr.n
		hdr, err := tr.Next()
		if err == io.EOF {
			// A tar ends with zero blocks; a stream that just stops after
			// an entry was cut short, unless its diff ID pins it:
			// zstd:chunked layers end so, their TOC outside the tar.
			if cr.n-before < 512 && !opts.pinned {
				return fail(fmt.Errorf("tar ends without its end-of-archive blocks: %w", io.ErrUnexpectedEOF))
			}
			break
		}
		if err != nil {
			return fail(fmt.Errorf("read tar: %w", err))
		}
		entries++
		if entries > opts.MaxEntries {
			return fail(fmt.Errorf("layer exceeds the limit of %d entries (tar bomb?): %w", opts.MaxEntries, errdefs.ErrFailedPrecondition))
		}
		if err := a.entry(hdr, tr); err != nil {
			return fail(err)
		}
		if a.lowerErr != nil {
			return fail(a.lowerErr)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return fail(fmt.Errorf("entry %q: read: %w", hdr.Name, err))
		}
	}
	if err := a.finish(); err != nil || a.lowerErr != nil {
		return fail(err)
	}
	// The diff ID covers every byte of the blob, padding and trailing
	// bytes included.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return fail(fmt.Errorf("read tar trailer: %w", err))
	}
	return ApplyResult{
		DiffID:  digest.NewDigestFromBytes(digest.SHA256, cr.h.Sum(nil)),
		Size:    cr.n,
		Entries: entries,
	}, nil
}

// countingReader hashes and counts what passes, and stops at max bytes of
// this layer or at its image's budget.
type countingReader struct {
	r     io.Reader
	h     hash.Hash
	n     int64
	max   int64
	image *imageBudget // nil: no image budget
	// compressed counts the blob bytes read (nil: no ratio check); past
	// floor, n may be at most ratio times it.
	compressed   *atomic.Int64
	ratio, floor int64
	err          error
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if c.n > c.max {
		c.err = fmt.Errorf("layer exceeds the limit of %d unpacked bytes (decompression bomb?): %w", c.max, errdefs.ErrFailedPrecondition)
		return n, c.err
	}
	if c.compressed != nil && c.n > c.floor && c.n/c.ratio > c.compressed.Load() {
		c.err = fmt.Errorf("layer unpacks to more than %d times its compressed size past %d bytes (decompression bomb?): %w", c.ratio, c.floor, errdefs.ErrFailedPrecondition)
		return n, c.err
	}
	if c.image != nil && c.image.used.Add(int64(n)) > c.image.max {
		c.err = fmt.Errorf("image exceeds the limit of %d unpacked bytes (decompression bomb?): %w", c.image.max, errdefs.ErrFailedPrecondition)
		return n, c.err
	}
	return n, err
}

// cleanName maps a tar name to a clean path relative to the layer root:
// leading slashes are dropped, and a name that still climbs out is refused.
func cleanName(name string) (string, error) {
	n := path.Clean(strings.TrimLeft(name, "/"))
	if n == "" {
		n = "."
	}
	if n == ".." || strings.HasPrefix(n, "../") {
		return "", fmt.Errorf("name %q escapes the layer root: %w", name, errdefs.ErrInvalidArgument)
	}
	if strings.IndexByte(n, 0) >= 0 {
		return "", fmt.Errorf("name %q contains a NUL byte: %w", name, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

func depth(p string) int {
	if p == "." {
		return 0
	}
	return strings.Count(p, "/") + 1
}

// under reports whether p is dir or below it.
func under(p, dir string) bool {
	return dir == "." || p == dir || strings.HasPrefix(p, dir+"/")
}

func ignoreErrnos(err error, errnos ...unix.Errno) error {
	for _, e := range errnos {
		if errors.Is(err, e) {
			return nil
		}
	}
	return err
}

func procPath(dirfd int, base string) string {
	return fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, base)
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if di, dj := depth(keys[i]), depth(keys[j]); di != dj {
			return di < dj
		}
		return keys[i] < keys[j]
	})
	return keys
}

var _ = os.ModePerm
