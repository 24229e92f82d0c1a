package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

// Why operations cannot lose what they write to a concurrent collection.
//
// An operation (pull, content fetch, push, import, lazy fetch) holds a
// lease, a record in the index, for as long as it runs. Every blob digest
// and snapshot key it is about to rely on is added to that lease *before*
// the operation checks whether the blob or snapshot exists (fetch and
// layers do this through index.AddToLease with the lease carried in ctx).
// Adding to a lease takes gcState.mu for reading; a collection holds it for
// writing from the moment it reads the roots until its last deletion. So
// for any resource R and collection C, either:
//
//   - R was added before C read the roots: C sees R leased and keeps it; or
//   - R is added after C finished: the operation then looks for R, finds it
//     gone if C removed it, and fetches or unpacks it again.
//
// That covers a blob or snapshot that already existed and is only being
// re-referenced, which is the case a "created since" rule gets wrong. The
// lease is deleted only once the image record exists (which is a root of
// its own), or when the operation fails. Operation leases expire after a
// day, so a crashed process does not pin its half-pulled content forever.
type gcState struct {
	mu sync.RWMutex
}

// Labels casfs puts on leases.
const (
	labelLeaseOperation = "casfs.lease/operation"
	opLeaseExpiry       = 24 * time.Hour
)

// opLease is the lease of one running operation; it remembers what it
// already recorded so that asking again costs nothing.
type opLease struct {
	s     *Local
	id    string
	mu    sync.Mutex
	blobs map[digest.Digest]bool
	snaps map[string]bool
}

// LeaseResources implements index.LeaseRecorder.
func (l *opLease) LeaseResources(ctx context.Context, blobs []digest.Digest, snapshots []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var nb []digest.Digest
	var ns []string
	for _, d := range blobs {
		if d != "" && !l.blobs[d] && !containsDigest(nb, d) {
			nb = append(nb, d)
		}
	}
	for _, k := range snapshots {
		if k != "" && !l.snaps[k] && !containsString(ns, k) {
			ns = append(ns, k)
		}
	}
	if len(nb) == 0 && len(ns) == 0 {
		return nil
	}
	db, err := l.s.Index()
	if err != nil {
		return err
	}
	l.s.gc.mu.RLock()
	defer l.s.gc.mu.RUnlock()
	_, err = db.Leases().Update(ctx, l.id, func(rec *index.Lease) error {
		rec.Blobs = append(rec.Blobs, nb...)
		rec.Snapshots = append(rec.Snapshots, ns...)
		return nil
	})
	if errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("lease %s of this operation was removed while it ran: %w", l.id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return fmt.Errorf("lease %s: %w", l.id, err)
	}
	for _, d := range nb {
		l.blobs[d] = true
	}
	for _, k := range ns {
		l.snaps[k] = true
	}
	return nil
}

func containsDigest(s []digest.Digest, d digest.Digest) bool {
	for _, x := range s {
		if x == d {
			return true
		}
	}
	return false
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// HoldLease creates a lease for one operation (what names it, e.g. "pull
// docker.io/library/nginx:1") and returns ctx carrying it: blobs fetched and
// snapshots stated or unpacked under ctx are recorded in it (see gcState).
// Call release once the operation's image record exists, or it failed.
// When ctx already carries a lease, that one is used and release does
// nothing.
func (s *Local) HoldLease(ctx context.Context, what string) (context.Context, func(), error) {
	if _, ok := index.LeaseRecorderFrom(ctx); ok {
		return ctx, func() {}, nil
	}
	db, err := s.Index()
	if err != nil {
		return ctx, nil, err
	}
	id, err := randomLeaseID()
	if err != nil {
		return ctx, nil, err
	}
	now := time.Now().UTC()
	rec := index.Lease{ID: id, CreatedAt: now, Expires: now.Add(opLeaseExpiry), Labels: map[string]string{labelLeaseOperation: what}}
	if thisProcess != "" {
		rec.Labels[labelLeaseHolder] = thisProcess
	}
	if err := db.Leases().Create(ctx, id, rec); err != nil {
		return ctx, nil, fmt.Errorf("lease for %s: %w", what, err)
	}
	l := &opLease{s: s, id: id, blobs: map[digest.Digest]bool{}, snaps: map[string]bool{}}
	release := func() {
		err := db.Leases().Delete(context.WithoutCancel(ctx), id)
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			slog.Warn("release lease", "lease", id, "operation", what, "err", err)
		}
	}
	return index.WithLeaseRecorder(ctx, l), release, nil
}

func randomLeaseID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return time.Now().UTC().Format("20060102150405") + "-" + hex.EncodeToString(b), nil
}

func (s *Local) ListLeases(ctx context.Context) ([]LeaseInfo, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	out := []LeaseInfo{}
	err = db.Leases().List(ctx, "", func(_ string, l index.Lease) error {
		out = append(out, l)
		return nil
	})
	return out, err
}

func (s *Local) CreateLease(ctx context.Context, opts LeaseOptions) (LeaseInfo, error) {
	if opts.Expires < 0 {
		return LeaseInfo{}, fmt.Errorf("lease expiry %s is negative: %w", opts.Expires, errdefs.ErrInvalidArgument)
	}
	if err := checkLabels(opts.Labels); err != nil {
		return LeaseInfo{}, fmt.Errorf("lease: %w", err)
	}
	id := opts.ID
	if id == "" {
		var err error
		if id, err = randomLeaseID(); err != nil {
			return LeaseInfo{}, err
		}
	}
	if err := index.ValidateLeaseID(id); err != nil {
		return LeaseInfo{}, err
	}
	db, err := s.Index()
	if err != nil {
		return LeaseInfo{}, err
	}
	now := time.Now().UTC()
	rec := index.Lease{ID: id, CreatedAt: now, Labels: opts.Labels}
	if len(rec.Labels) == 0 {
		rec.Labels = nil
	}
	if opts.Expires > 0 {
		rec.Expires = now.Add(opts.Expires)
	}
	if err := db.Leases().Create(ctx, id, rec); err != nil {
		return LeaseInfo{}, err
	}
	return rec, nil
}

func (s *Local) RemoveLease(ctx context.Context, id string) error {
	if err := index.ValidateLeaseID(id); err != nil {
		return err
	}
	db, err := s.Index()
	if err != nil {
		return err
	}
	return db.Leases().Delete(ctx, id)
}
