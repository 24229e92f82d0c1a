package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// LabelUnsynced marks a committed snapshot whose files were written
// through the page cache and not yet synced; its value is the boot ID of
// the machine's boot that wrote them. A process kill loses nothing the page
// cache holds, a power loss can: a snapshot still marked by an earlier
// boot may be incomplete, and is rebuilt from its blob (Rebuild).
const LabelUnsynced = "casfs.layers/unsynced"

// defaultSyncDelay is how long after an unpack the snapshotter syncs the
// snapshots written since its last sync. By then the kernel has written
// most of their data back on its own, so the sync is cheap and does not
// make the creates of an unpack under way wait for journal commits.
const defaultSyncDelay = 30 * time.Second

// bootIDFile holds the kernel's random ID of the current boot.
const bootIDFile = "/proc/sys/kernel/random/boot_id"

// readBootID reads the current boot's ID.
func readBootID() (string, error) {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("boot id: %s is empty: %w", bootIDFile, errdefs.ErrFailedPrecondition)
	}
	return id, nil
}

// boot is the ID of this boot, read once (Snapshotter.BootID, else
// readBootID). Without one, every snapshot counts as written by another
// boot, which costs a rebuild but never trusts a snapshot it should not.
func (s *Snapshotter) boot() string {
	s.bootOnce.Do(func() {
		read := s.BootID
		if read == nil {
			read = readBootID
		}
		id, err := read()
		if err != nil {
			slog.Warn("snapshots: cannot tell this boot from others; unsynced snapshots are rebuilt on every open", "err", err)
			id = "unknown-" + time.Now().UTC().Format(time.RFC3339Nano)
		}
		s.bootID = id
	})
	return s.bootID
}

// extract decompresses layer into dir and checks that the tar hashes to
// diffID. lowers (nil for a base layer) gives the fs directories of the
// layers below, top-most first, once they are complete; it is called only
// if the layer needs to look below.
func (s *Snapshotter) extract(ctx context.Context, dir string, lowers func() ([]string, error), layer io.Reader, mediaType string, diffID digest.Digest) error {
	compressed := new(atomic.Int64)
	zr, err := Decompress(mediaType, &compressedCounter{r: layer, n: compressed})
	if err != nil {
		return err
	}
	rc := newReadAhead(zr)
	defer rc.Close()
	opts := s.Limits
	opts.Lowers = nil
	opts.lowersFn = lowers
	opts.compressed = compressed // a plain tar is 1:1, never over
	opts.pinned = true           // checked against diffID below
	res, err := Apply(ctx, dir, rc, opts)
	if err != nil {
		return err
	}
	if res.DiffID != diffID {
		return fmt.Errorf("uncompressed layer is %s, want %s: %w", res.DiffID, diffID, errdefs.ErrDigestMismatch)
	}
	return nil
}

// lowersWhenReady returns what extract calls for the lower layers of a
// snapshot on parent ("": none, and nil): it waits for ready (if set) and
// reads the parent's stack, once; later calls return the same.
func (s *Snapshotter) lowersWhenReady(ctx context.Context, parent string, ready func(context.Context) error) func() ([]string, error) {
	if parent == "" {
		return nil
	}
	var (
		once   sync.Once
		lowers []string
		err    error
	)
	return func() ([]string, error) {
		once.Do(func() {
			if ready != nil {
				if err = ready(ctx); err != nil {
					err = fmt.Errorf("wait for the layer below: %w", err)
					return
				}
			}
			lowers, err = s.Lowers(ctx, parent)
		})
		return lowers, err
	}
}

// Stale returns the committed snapshots that an earlier boot wrote and
// never synced, parents before children: after a power loss their files
// may be incomplete although their records are there.
func (s *Snapshotter) Stale(ctx context.Context) ([]index.Snapshot, error) {
	recs, err := s.list(ctx)
	if err != nil {
		return nil, fmt.Errorf("stale snapshots: %w", err)
	}
	boot := s.boot()
	byKey := map[string]index.Snapshot{}
	for _, r := range recs {
		byKey[r.Key] = r
	}
	depth := func(r index.Snapshot) int {
		n := 0
		for p := r.Parent; p != "" && n <= len(byKey); n++ {
			p = byKey[p].Parent
		}
		return n
	}
	var out []index.Snapshot
	for _, r := range recs {
		if b := r.Labels[LabelUnsynced]; r.Kind == index.SnapshotCommitted && b != "" && b != boot {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return depth(out[i]) < depth(out[j]) })
	return out, nil
}

// Rebuild unpacks the committed snapshot key again, in place, from its
// compressed layer blob: what a power loss may have left incomplete
// becomes whole again, checked against the snapshot's recorded diff ID.
// Snapshots stacked on key keep it as their parent; rebuild a stack
// parents first (Stale's order). The result is synced by the next Sync.
func (s *Snapshotter) Rebuild(ctx context.Context, key string, layer io.Reader, mediaType string) error {
	ctx = index.Unsynced(ctx)
	fail := func(err error) error { return fmt.Errorf("rebuild snapshot %s: %w", key, err) }
	unlock, err := s.lockKey(ctx, key)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	rec, err := s.table().Get(ctx, key)
	if err != nil {
		return fail(err)
	}
	diffID, err := digest.Parse(rec.Labels[LabelDiffID])
	if rec.Kind != index.SnapshotCommitted || err != nil {
		return fail(fmt.Errorf("not a committed layer snapshot with a diff id: %w", errdefs.ErrFailedPrecondition))
	}
	dir := s.fsDir(rec.ID)
	if err := os.RemoveAll(dir); err != nil {
		return fail(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fail(err)
	}
	if err := s.extract(ctx, dir, s.lowersWhenReady(ctx, rec.Parent, nil), layer, mediaType, diffID); err != nil {
		return fail(err)
	}
	size, inodes, err := diskUsage(dir)
	if err != nil {
		return fail(err)
	}
	boot := s.boot()
	_, err = s.table().Update(ctx, key, func(r *index.Snapshot) error {
		r.Size, r.Inodes = size, inodes
		r.Labels[LabelUnsynced] = boot
		r.UpdatedAt = time.Now().UTC()
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return nil
}

// Sync makes every snapshot this boot wrote durable: one syncfs(2) of the
// filesystem under the snapshots, then their records lose LabelUnsynced.
// Snapshots that an earlier boot left unsynced are not touched: they need
// Rebuild first.
func (s *Snapshotter) Sync(ctx context.Context) error {
	s.syncRun.Lock()
	defer s.syncRun.Unlock()
	s.syncMu.Lock()
	closed := s.closed
	s.syncMu.Unlock()
	if closed {
		return nil
	}
	recs, err := s.list(ctx)
	if err != nil {
		return fmt.Errorf("sync snapshots: %w", err)
	}
	boot := s.boot()
	var keys []string
	for _, r := range recs {
		if r.Kind == index.SnapshotCommitted && r.Labels[LabelUnsynced] == boot {
			keys = append(keys, r.Key)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	// Listed before the sync: a snapshot committed after it began keeps
	// its label until the next one.
	fd, err := unix.Open(s.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync snapshots: %w", err)
	}
	err = unix.Syncfs(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("sync snapshots: syncfs %s: %w", s.dir, err)
	}
	ctx = index.Unsynced(ctx) // lost labels only cost a needless rebuild
	for _, k := range keys {
		_, err := s.table().Update(ctx, k, func(r *index.Snapshot) error {
			if r.Labels[LabelUnsynced] != boot {
				return nil
			}
			delete(r.Labels, LabelUnsynced)
			if len(r.Labels) == 0 {
				r.Labels = nil
			}
			return nil
		})
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("sync snapshots: %w", err)
		}
	}
	return nil
}

// SyncSoon schedules a Sync SyncDelay from now (defaultSyncDelay when
// zero), unless one is already scheduled. Close cancels it.
func (s *Snapshotter) SyncSoon() {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.syncTimer != nil || s.closed {
		return
	}
	d := s.SyncDelay
	if d <= 0 {
		d = defaultSyncDelay
	}
	s.syncTimer = time.AfterFunc(d, func() {
		s.syncMu.Lock()
		s.syncTimer = nil
		s.syncMu.Unlock()
		if err := s.Sync(context.Background()); err != nil {
			slog.Warn("syncing snapshots", "err", err)
		}
	})
}

// Close cancels a scheduled Sync and waits for one under way; snapshots
// left unsynced are synced, or rebuilt after a power loss, by a later open.
func (s *Snapshotter) Close() {
	s.syncMu.Lock()
	s.closed = true
	if s.syncTimer != nil {
		s.syncTimer.Stop()
		s.syncTimer = nil
	}
	s.syncMu.Unlock()
	// Taking syncRun waits for a Sync under way to finish.
	s.syncRun.Lock()
	defer s.syncRun.Unlock()
}
