package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/fetch"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/layers"
	"github.com/casfs/casfs/oci"
)

// Options control how a store root is opened.
type Options struct {
	// Create makes the root when it does not exist; commands that only
	// read leave it false so that a typo in --root is an error, not a new store.
	Create bool
	// Platform is the platform this machine runs, which chooses the
	// manifest of a multi-platform image to pull, show, export and
	// unpack; zero means this machine's (a test may act as another).
	Platform ocispec.Platform
	// Limits bound what unpacking a layer and an image may read: bytes per
	// layer, bytes per image, entries per layer (zero fields: the layers
	// package's defaults; Lowers is not used).
	Limits layers.ApplyOptions
	// BootID tells this boot of the machine from others (nil: the
	// kernel's boot ID); a test fakes a reboot with it.
	BootID func() (string, error)
}

// Local is the embedded store: this process owns the root.
type Local struct {
	root  string
	blobs *cas.Store
	// host is the platform this machine runs (Options.Platform).
	host oci.Platform
	// limits are Options.Limits, given to the snapshotter.
	limits layers.ApplyOptions

	// The index is opened on first use: badger lets one process hold it,
	// and operations such as ingest take their per-ref lock first so that
	// a locked ref is reported as such rather than as a busy store.
	dbOnce sync.Once
	dbErr  error
	idx    *index.DB

	// fetch is the one registry client of the store: every operation
	// goes through it, so that concurrent ones share their downloads.
	fetch *fetch.Fetcher

	snapOnce sync.Once
	snapErr  error
	snaps    *layers.Snapshotter
	bootID   func() (string, error)

	// repairs are what opening the store repaired, for the next check.
	repairsMu sync.Mutex
	repairs   []CheckFinding

	// lazy fetches a recorded blob whose file is missing; nil when the
	// store has no registry access configured. A tee, when given, gets the
	// bytes as they download unless another fetch of the blob is under way.
	lazy      func(ctx context.Context, d digest.Digest, tee fetch.TeeWriter) error
	lazyGroup singleflight.Group
	// lazyLayers serves eStargz layers chunk by chunk (lazy.go); nil
	// without registry access.
	lazyLayers *lazyLayers
	pre        prebuilt // the rootfs tree a lazy pull built ahead
	// opening are the layers lazy pulls are opening, whose chunk caches
	// may exist before their records do (lazy_gc.go).
	opening openingLayers
	// closing ends background work (lazy completion, trees built ahead)
	// when the store closes; Close waits for that work (bg) to return
	// before it closes the database the work reads. bgMu orders starting
	// work against Close.
	closing     context.Context
	stopClosing context.CancelFunc
	bgMu        sync.Mutex
	bg          sync.WaitGroup

	// onChange is called after the catalogue or the blob set changed, so
	// that a live mount can drop what it cached.
	onChange func()

	// gc orders collections against operations adding to their leases
	// (gc_lease.go).
	gc gcState
}

// OnChange registers fn to be called after images or blobs change.
func (s *Local) OnChange(fn func()) { s.onChange = fn }

func (s *Local) changed() {
	if s.onChange != nil {
		s.onChange()
	}
}

var _ API = (*Local)(nil)

// Open opens the store at root.
func Open(root string, opts Options) (*Local, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("store root %q: %w", root, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist) && !opts.Create:
		return nil, fmt.Errorf("no store at %s (nothing has been stored there yet): %w", abs, errdefs.ErrNotFound)
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(abs, 0o711); err != nil {
			return nil, fmt.Errorf("create store root %s: %w", abs, unwrapPath(err))
		}
	case err != nil:
		return nil, fmt.Errorf("store root %s: %w", abs, unwrapPath(err))
	case !fi.IsDir():
		return nil, fmt.Errorf("store root %s is not a directory: %w", abs, errdefs.ErrInvalidArgument)
	}
	blobs, err := cas.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	host := opts.Platform
	if host.OS == "" {
		host = oci.HostPlatform()
	}
	closing, stop := context.WithCancel(context.Background())
	limits := opts.Limits
	limits.Lowers = nil
	s := &Local{root: abs, blobs: blobs, host: oci.NewPlatform(host), limits: limits, bootID: opts.BootID, closing: closing, stopClosing: stop}
	s.fetch = fetch.New(blobs, fetchRecords{s})
	return s, nil
}

// Root is the absolute store root.
func (s *Local) Root() string { return s.root }

// Blobs exposes the blob store to the parts composed on top of it.
func (s *Local) Blobs() *cas.Store { return s.blobs }

// Index opens the metadata database on first use.
func (s *Local) Index() (*index.DB, error) {
	s.dbOnce.Do(func() {
		s.idx, s.dbErr = index.Open(filepath.Join(s.root, "meta"))
	})
	return s.idx, s.dbErr
}

// goBackground runs fn on a goroutine of its own unless the store is
// closing, and reports whether it did; Close waits for fn to return. fn
// ends when s.closing does.
func (s *Local) goBackground(fn func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.closing.Err() != nil {
		return false
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		fn()
	}()
	return true
}

// Close ends background work, waits for it, and releases the database.
func (s *Local) Close() error {
	var err error
	s.bgMu.Lock()
	s.stopClosing()
	s.bgMu.Unlock()
	s.bg.Wait()
	s.dbOnce.Do(func() { s.dbErr = errors.New("store closed") })
	s.snapOnce.Do(func() { s.snapErr = errors.New("store closed") })
	if s.snaps != nil {
		s.snaps.Close()
	}
	if s.idx != nil {
		err = s.idx.Close()
		s.idx = nil
	}
	return err
}

// unwrapPath keeps the OS reason of a path error but drops the path, which
// callers already name.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
