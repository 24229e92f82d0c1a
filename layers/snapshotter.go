package layers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Labels the snapshotter puts on snapshot records.
const (
	// LabelExtracting marks an active snapshot that Unpack is filling; one
	// found at start-up was left by a crash and is removed.
	LabelExtracting = "casfs.layers/extracting"
	// LabelDiffID records the uncompressed digest of an unpacked layer.
	LabelDiffID = "casfs.layers/diff-id"
)

// Snapshotter keeps overlay snapshots under <root>/snapshots/<id>/fs, with
// their records in the index. Committed layer snapshots are keyed by chain
// ID, so an image's layers are shared with every image that has the same
// stack below them.
type Snapshotter struct {
	dir string
	db  *index.DB

	// Limits applies to every Unpack (zero fields: Apply's defaults).
	Limits ApplyOptions

	// BootID tells this boot from others (nil: readBootID); set it before
	// the first Unpack. SyncDelay is SyncSoon's delay (0: defaultSyncDelay).
	BootID    func() (string, error)
	SyncDelay time.Duration

	bootOnce  sync.Once
	bootID    string
	syncRun   sync.Mutex // one Sync at a time
	syncMu    sync.Mutex // guards syncTimer and closed
	syncTimer *time.Timer
	closed    bool

	mu    sync.Mutex // serialises record changes that look at other records
	keyMu sync.Mutex
	keys  map[string]*keyLock // Unpack in progress, by chain ID
}

type keyLock struct {
	sem   chan struct{}
	users int
}

// NewSnapshotter opens the snapshots under root and removes what a crash
// left half-made: active snapshots still marked extracting, and snapshot
// directories that no record names.
func NewSnapshotter(root string, db *index.DB) (*Snapshotter, error) {
	if db == nil {
		return nil, fmt.Errorf("open snapshotter: no index: %w", errdefs.ErrInvalidArgument)
	}
	s := &Snapshotter{dir: filepath.Join(root, "snapshots"), db: db, keys: map[string]*keyLock{}}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("open snapshotter: %w", err)
	}
	if err := s.cleanup(context.Background()); err != nil {
		return nil, fmt.Errorf("open snapshotter: clean up after a crash: %w", err)
	}
	return s, nil
}

func (s *Snapshotter) table() index.Table[index.Snapshot] { return s.db.Snapshots() }

func (s *Snapshotter) cleanup(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	recs, err := s.list(ctx)
	if err != nil {
		return err
	}
	used := map[string]bool{}
	for _, r := range recs {
		if r.Kind == index.SnapshotActive && r.Labels[LabelExtracting] != "" {
			slog.Info("removing snapshot left half-extracted", "key", r.Key, "id", r.ID)
			if err := s.table().Delete(ctx, r.Key); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				return err
			}
			continue
		}
		used[r.ID] = true
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if used[e.Name()] {
			continue
		}
		slog.Info("removing snapshot directory without a record", "id", e.Name())
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (s *Snapshotter) fsDir(id string) string   { return filepath.Join(s.dir, id, "fs") }
func (s *Snapshotter) workDir(id string) string { return filepath.Join(s.dir, id, "work") }

// WorkDir is overlayfs' work directory for the active snapshot whose fs
// directory (what Prepare returned) is fsDir.
func (s *Snapshotter) WorkDir(fsDir string) string { return filepath.Join(filepath.Dir(fsDir), "work") }

func newID() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Prepare makes a writable active snapshot key on the committed snapshot
// parent ("" for none) and returns its fs directory (empty: it holds only
// this snapshot's changes). It fails with ErrExists if key exists.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string) (string, error) {
	rec, err := s.prepare(ctx, key, parent, true, nil)
	if err != nil {
		return "", err
	}
	return s.fsDir(rec.ID), nil
}

// prepare makes the active snapshot key on parent; checkParent says
// whether parent must be committed already (an unpack that waits for its
// parent before it commits does not need it to be).
func (s *Snapshotter) prepare(ctx context.Context, key, parent string, checkParent bool, labels map[string]string) (index.Snapshot, error) {
	if key == "" {
		return index.Snapshot{}, fmt.Errorf("prepare snapshot: empty key: %w", errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if parent != "" && checkParent {
		p, err := s.table().Get(ctx, parent)
		if err != nil {
			return index.Snapshot{}, fmt.Errorf("prepare snapshot %s: parent %s: %w", key, parent, err)
		}
		if p.Kind != index.SnapshotCommitted {
			return index.Snapshot{}, fmt.Errorf("prepare snapshot %s: parent %s is not committed: %w", key, parent, errdefs.ErrFailedPrecondition)
		}
	}
	if _, err := s.table().Get(ctx, key); err == nil {
		return index.Snapshot{}, fmt.Errorf("prepare snapshot %s: %w", key, errdefs.ErrExists)
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return index.Snapshot{}, fmt.Errorf("prepare snapshot %s: %w", key, err)
	}
	id, err := newID()
	if err != nil {
		return index.Snapshot{}, fmt.Errorf("prepare snapshot %s: %w", key, err)
	}
	// Directory first, record second: a crash in between leaves a
	// directory without a record, which the next start removes.
	for _, d := range []string{filepath.Join(s.dir, id), s.fsDir(id), s.workDir(id)} {
		if err := os.Mkdir(d, 0o755); err != nil {
			os.RemoveAll(filepath.Join(s.dir, id))
			return index.Snapshot{}, fmt.Errorf("prepare snapshot %s: %w", key, err)
		}
	}
	now := time.Now().UTC()
	rec := index.Snapshot{Key: key, Parent: parent, ID: id, Kind: index.SnapshotActive, Labels: labels, CreatedAt: now, UpdatedAt: now}
	if err := s.table().Create(ctx, key, rec); err != nil {
		os.RemoveAll(filepath.Join(s.dir, id))
		return index.Snapshot{}, fmt.Errorf("prepare snapshot %s: %w", key, err)
	}
	return rec, nil
}

// Commit turns the active snapshot key into the committed snapshot name.
// It fails with ErrExists if name exists (key is then left as it was).
func (s *Snapshotter) Commit(ctx context.Context, name, key string) error {
	_, err := s.commit(ctx, name, key, nil)
	return err
}

func (s *Snapshotter) commit(ctx context.Context, name, key string, labels map[string]string) (index.Snapshot, error) {
	if name == "" {
		return index.Snapshot{}, fmt.Errorf("commit snapshot %s: empty name: %w", key, errdefs.ErrInvalidArgument)
	}
	a, err := s.table().Get(ctx, key)
	if err != nil {
		return index.Snapshot{}, fmt.Errorf("commit snapshot %s: %w", key, err)
	}
	if a.Kind != index.SnapshotActive {
		return index.Snapshot{}, fmt.Errorf("commit snapshot %s: not active: %w", key, errdefs.ErrFailedPrecondition)
	}
	// Measured before taking the lock: the active snapshot is the
	// caller's alone, and a big layer takes a while to walk.
	size, inodes, err := diskUsage(s.fsDir(a.ID))
	if err != nil {
		return index.Snapshot{}, fmt.Errorf("commit snapshot %s: usage: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.table().Get(ctx, key); err != nil {
		return index.Snapshot{}, fmt.Errorf("commit snapshot %s: %w", key, err)
	}
	c := a
	c.Key, c.Kind, c.Size, c.Inodes = name, index.SnapshotCommitted, size, inodes
	c.Labels = maps.Clone(a.Labels)
	maps.Copy(c.Labels, labels)
	delete(c.Labels, LabelExtracting)
	if len(c.Labels) == 0 {
		c.Labels = nil
	}
	c.UpdatedAt = time.Now().UTC()
	// One transaction: the active record becomes the committed one.
	err = s.db.Update(ctx, func(tx *index.Tx) error {
		t := index.TxTable(tx, s.table())
		if err := t.Create(name, c); err != nil {
			return err
		}
		return t.Delete(key)
	})
	if err != nil {
		return index.Snapshot{}, fmt.Errorf("commit snapshot %s as %s: %w", key, name, err)
	}
	_ = os.RemoveAll(s.workDir(a.ID))
	return c, nil
}

// Remove deletes snapshot key and its directory; ErrFailedPrecondition if
// another snapshot has it as parent.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	s.mu.Lock()
	rec, err := s.table().Get(ctx, key)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("remove snapshot %s: %w", key, err)
	}
	recs, err := s.list(ctx)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("remove snapshot %s: %w", key, err)
	}
	shared := false
	for _, r := range recs {
		if r.Parent == key {
			s.mu.Unlock()
			return fmt.Errorf("remove snapshot %s: snapshot %s is based on it: %w", key, r.Key, errdefs.ErrFailedPrecondition)
		}
		shared = shared || (r.Key != key && r.ID == rec.ID)
	}
	err = s.table().Delete(ctx, key)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("remove snapshot %s: %w", key, err)
	}
	if shared {
		return nil
	}
	if err := os.RemoveAll(filepath.Join(s.dir, rec.ID)); err != nil {
		// The record is gone; the next start removes the directory.
		return fmt.Errorf("remove snapshot %s: directory: %w", key, err)
	}
	return nil
}

// Stat returns the record of snapshot key (ErrNotFound if none). When ctx
// carries a lease, key is added to it first (index.AddToLease), so that a
// caller that goes on to build on the snapshot keeps it.
func (s *Snapshotter) Stat(ctx context.Context, key string) (index.Snapshot, error) {
	if err := index.AddToLease(ctx, nil, key); err != nil {
		return index.Snapshot{}, fmt.Errorf("stat snapshot %s: %w", key, err)
	}
	rec, err := s.table().Get(ctx, key)
	if err != nil {
		return index.Snapshot{}, fmt.Errorf("stat snapshot %s: %w", key, err)
	}
	return rec, nil
}

// List returns every snapshot record, in key order.
func (s *Snapshotter) List(ctx context.Context) ([]index.Snapshot, error) {
	recs, err := s.list(ctx)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	return recs, nil
}

func (s *Snapshotter) list(ctx context.Context) ([]index.Snapshot, error) {
	var out []index.Snapshot
	err := s.table().List(ctx, "", func(_ string, v index.Snapshot) error {
		out = append(out, v)
		return nil
	})
	return out, err
}

// Usage returns the disk space (allocated blocks, hardlinks counted once)
// and inodes of snapshot key's own directory: recorded at commit for a
// committed snapshot, measured now for an active one.
func (s *Snapshotter) Usage(ctx context.Context, key string) (size, inodes int64, err error) {
	rec, err := s.Stat(ctx, key)
	if err != nil {
		return 0, 0, fmt.Errorf("usage: %w", err)
	}
	if rec.Kind == index.SnapshotCommitted {
		return rec.Size, rec.Inodes, nil
	}
	size, inodes, err = diskUsage(s.fsDir(rec.ID))
	if err != nil {
		return 0, 0, fmt.Errorf("usage of snapshot %s: %w", key, err)
	}
	return size, inodes, nil
}

func diskUsage(dir string) (size, inodes int64, err error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return 0, 0, err
	}
	u := usage{seen: map[uint64]bool{}}
	u.add(&st)
	err = u.walk(fd)
	return u.size, u.inodes, err
}

// usage adds up a tree's blocks and inodes, each inode once.
type usage struct {
	seen         map[uint64]bool
	size, inodes int64
}

func (u *usage) add(st *unix.Stat_t) {
	if u.seen[st.Ino] {
		return
	}
	u.seen[st.Ino] = true
	u.inodes++
	u.size += st.Blocks * 512
}

// walk stats every entry of the open directory fd relative to it (no
// path walks from the root) and descends into subdirectories; it closes fd.
func (u *usage) walk(fd int) error {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return err
	}
	for _, e := range ents {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, e.Name(), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		u.add(&st)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		sub, err := unix.Openat(fd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := u.walk(sub); err != nil {
			return err
		}
	}
	return nil
}

// Lowers returns the fs directories of key and its ancestors, top-most
// first: the lowerdir= list of an overlay showing key.
func (s *Snapshotter) Lowers(ctx context.Context, key string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for k := key; k != ""; {
		if seen[k] {
			return nil, fmt.Errorf("lowers of snapshot %s: parent loop at %s: %w", key, k, errdefs.ErrFailedPrecondition)
		}
		seen[k] = true
		rec, err := s.table().Get(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("lowers of snapshot %s: %s: %w", key, k, err)
		}
		out = append(out, s.fsDir(rec.ID))
		k = rec.Parent
	}
	return out, nil
}

// lockKey waits (as long as ctx allows) for the right to unpack chainID.
func (s *Snapshotter) lockKey(ctx context.Context, chainID string) (func(), error) {
	s.keyMu.Lock()
	l := s.keys[chainID]
	if l == nil {
		l = &keyLock{sem: make(chan struct{}, 1)}
		s.keys[chainID] = l
	}
	l.users++
	s.keyMu.Unlock()
	release := func() {
		s.keyMu.Lock()
		if l.users--; l.users == 0 {
			delete(s.keys, chainID)
		}
		s.keyMu.Unlock()
	}
	select {
	case l.sem <- struct{}{}:
		return func() { <-l.sem; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// Unpack makes the committed snapshot chainID from a compressed layer blob
// on top of the committed snapshot parentChainID ("" for a base layer). It
// is idempotent: an existing snapshot is returned as is, and of concurrent
// Unpacks of one chain ID one extracts and the others get its snapshot. The
// uncompressed stream must hash to diffID (else ErrDigestMismatch, and
// nothing is kept).
func (s *Snapshotter) Unpack(ctx context.Context, chainID, parentChainID string, layer io.Reader, mediaType string, diffID digest.Digest) (index.Snapshot, error) {
	return s.UnpackAbove(ctx, chainID, parentChainID, nil, layer, mediaType, diffID)
}

// UnpackAbove is Unpack for a layer whose parent may still be being
// unpacked, so that the layers of one image unpack side by side:
// parentReady (nil: the parent is committed already) must return once
// parentChainID is committed, or an error. It is called at most once: when
// the layer first needs to look below (a hardlink whose target is not in
// the layer, a directory the layer makes implicitly, a parent path the
// layer lacks, which may be a lower symlink), or else before the commit.
// Until then the layer's files are written without waiting.
func (s *Snapshotter) UnpackAbove(ctx context.Context, chainID, parentChainID string, parentReady func(context.Context) error, layer io.Reader, mediaType string, diffID digest.Digest) (index.Snapshot, error) {
	fail := func(err error) (index.Snapshot, error) {
		return index.Snapshot{}, fmt.Errorf("unpack layer %s as %s: %w", diffID, chainID, err)
	}
	// A snapshot is derived data, rebuilt from its verified blob: like its
	// files (written through the page cache, as containerd's overlay
	// snapshotter does), its records are not synced one by one. The image
	// record, synced, makes them durable along with it. The files are
	// synced in the background later (SyncSoon); until then the record
	// carries this boot's ID, so that a store opened after a power loss
	// knows to rebuild them (Stale, Rebuild).
	ctx = index.Unsynced(ctx)
	// The snapshot and its parent go into ctx's lease (if any) before
	// either is looked at, so a collection cannot take them from under us.
	if err := index.AddToLease(ctx, nil, chainID, parentChainID); err != nil {
		return fail(err)
	}
	if rec, ok, err := s.existing(ctx, chainID); ok || err != nil {
		return rec, err
	}
	unlock, err := s.lockKey(ctx, chainID)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	if rec, ok, err := s.existing(ctx, chainID); ok || err != nil {
		return rec, err
	}
	id, err := newID()
	if err != nil {
		return fail(err)
	}
	key := "extract-" + id + "-" + chainID
	active, err := s.prepare(ctx, key, parentChainID, parentReady == nil, map[string]string{LabelExtracting: chainID})
	if err != nil {
		return fail(err)
	}
	discard := func() {
		if err := s.Remove(context.WithoutCancel(ctx), key); err != nil {
			slog.Warn("discarding failed extraction", "key", key, "err", err)
		}
	}
	lowers := s.lowersWhenReady(ctx, parentChainID, parentReady)
	err = s.extract(ctx, s.fsDir(active.ID), lowers, layer, mediaType, diffID)
	if err == nil && parentChainID != "" {
		_, err = lowers() // committed only on a committed parent
	}
	if err != nil {
		discard()
		return fail(err)
	}
	rec, err := s.commit(ctx, chainID, key, map[string]string{LabelDiffID: diffID.String(), LabelUnsynced: s.boot()})
	if errors.Is(err, errdefs.ErrExists) {
		discard()
		if rec, ok, err := s.existing(ctx, chainID); ok || err != nil {
			return rec, err
		}
	}
	if err != nil {
		discard()
		return fail(err)
	}
	s.SyncSoon()
	return rec, nil
}

// existing returns the committed snapshot chainID if there is one.
func (s *Snapshotter) existing(ctx context.Context, chainID string) (index.Snapshot, bool, error) {
	rec, err := s.table().Get(ctx, chainID)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return index.Snapshot{}, false, nil
	case err != nil:
		return index.Snapshot{}, false, fmt.Errorf("unpack %s: %w", chainID, err)
	case rec.Kind != index.SnapshotCommitted:
		return index.Snapshot{}, false, fmt.Errorf("unpack %s: an active snapshot has that key: %w", chainID, errdefs.ErrExists)
	}
	return rec, true, nil
}

// compressedCounter counts the compressed bytes a decompressor reads (it
// may read from another goroutine).
type compressedCounter struct {
	r io.Reader
	n *atomic.Int64
}

func (c *compressedCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
