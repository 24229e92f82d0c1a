package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/layers"
)

// An image mount is recorded as a lease (so that garbage collection keeps
// the snapshots it shows) with these labels. A writable snapshot kept after
// an unmount keeps its lease, with mounted=false, until unmount --rm.
const (
	mountLeasePrefix   = "mount-"
	labelMountTarget   = "casfs.mount/target"
	labelMountImage    = "casfs.mount/image"
	labelMountManifest = "casfs.mount/manifest"
	labelMountSnapshot = "casfs.mount/snapshot"
	labelMountWritable = "casfs.mount/writable"
	labelMountMounted  = "casfs.mount/mounted"
)

// mountMu serialises image mounts and unmounts of this process, so that two
// of one target cannot both pass the "not mounted yet" check.
var mountMu sync.Mutex

// mountKey names the lease and the writable snapshot of a target.
func mountKey(target string) string {
	sum := sha256.Sum256([]byte(target))
	return mountLeasePrefix + hex.EncodeToString(sum[:])
}

func mountFromLease(l index.Lease) ImageMount {
	return ImageMount{
		Target: l.Labels[labelMountTarget], Image: l.Labels[labelMountImage],
		Manifest: digest.Digest(l.Labels[labelMountManifest]), Snapshot: l.Labels[labelMountSnapshot],
		Writable: l.Labels[labelMountWritable], Mounted: l.Labels[labelMountMounted] == "true",
		CreatedAt: l.CreatedAt,
	}
}

func mountLease(m ImageMount) index.Lease {
	l := index.Lease{ID: mountKey(m.Target), CreatedAt: m.CreatedAt, Labels: map[string]string{
		labelMountTarget: m.Target, labelMountImage: m.Image, labelMountManifest: m.Manifest.String(),
		labelMountSnapshot: m.Snapshot, labelMountMounted: strconv.FormatBool(m.Mounted),
	}}
	if m.Writable != "" {
		l.Labels[labelMountWritable] = m.Writable
	}
	return l
}

func (s *Local) ListImageMounts(ctx context.Context) ([]ImageMount, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	var out []ImageMount
	err = db.Leases().List(ctx, mountLeasePrefix, func(_ string, l index.Lease) error {
		if l.Labels[labelMountTarget] != "" {
			out = append(out, mountFromLease(l))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list image mounts: %w", err)
	}
	return out, nil
}

func (s *Local) MountImage(ctx context.Context, ref, target string, opts MountOptions) (ImageMount, error) {
	if !filepath.IsAbs(target) {
		return ImageMount{}, fmt.Errorf("mount target %q is not an absolute path: %w", target, errdefs.ErrInvalidArgument)
	}
	name, il, err := s.imageLayersOf(ctx, ref)
	if err != nil {
		return ImageMount{}, err
	}
	if len(il.Layers) == 0 {
		return ImageMount{}, fmt.Errorf("image %s has no layers to mount: %w", name, errdefs.ErrFailedPrecondition)
	}
	if err := s.unpack(ctx, il, nil); err != nil {
		return ImageMount{}, fmt.Errorf("image %s: %w", name, err)
	}
	fd, real, err := openMountTarget(target)
	if err != nil {
		return ImageMount{}, err
	}
	defer unix.Close(fd)

	db, err := s.Index()
	if err != nil {
		return ImageMount{}, err
	}
	sn, err := s.Snapshotter()
	if err != nil {
		return ImageMount{}, err
	}
	mountMu.Lock()
	defer mountMu.Unlock()
	key := mountKey(real)
	top := il.ChainIDs[len(il.ChainIDs)-1].String()
	m := ImageMount{Target: real, Image: name, Manifest: il.Manifest.Digest, Snapshot: top, Mounted: true, CreatedAt: time.Now().UTC()}
	old, err := db.Leases().Get(ctx, key)
	hadLease := err == nil
	switch {
	case err != nil && !errors.Is(err, errdefs.ErrNotFound):
		return ImageMount{}, fmt.Errorf("mount %s at %s: %w", name, real, err)
	case hadLease && old.Labels[labelMountMounted] == "true":
		return ImageMount{}, fmt.Errorf("mount %s at %s: casfs already mounted %s there (casfs image unmount first): %w", name, real, old.Labels[labelMountImage], errdefs.ErrExists)
	case hadLease && old.Labels[labelMountWritable] != "" && !opts.ReadWrite:
		return ImageMount{}, fmt.Errorf("mount %s at %s: a writable snapshot of %s is kept for this target (mount with --rw, or casfs image unmount --rm it): %w", name, real, old.Labels[labelMountImage], errdefs.ErrFailedPrecondition)
	}
	lowers, err := sn.Lowers(ctx, top)
	if err != nil {
		return ImageMount{}, err
	}
	var upper, work string
	created := false
	if opts.ReadWrite {
		m.Writable = key
		rec, err := sn.Stat(ctx, key)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			if upper, err = sn.Prepare(ctx, key, top); err != nil {
				return ImageMount{}, fmt.Errorf("mount %s at %s: %w", name, real, err)
			}
			created = true
			_, _ = db.Snapshots().Update(ctx, key, func(r *index.Snapshot) error {
				if r.Labels == nil {
					r.Labels = map[string]string{}
				}
				r.Labels[labelMountTarget], r.Labels[labelMountImage] = real, name
				return nil
			})
		case err != nil:
			return ImageMount{}, err
		case rec.Parent != top || rec.Kind != index.SnapshotActive:
			return ImageMount{}, fmt.Errorf("mount %s at %s: the writable snapshot kept for this target is on another image's layers (casfs image unmount --rm %s first): %w", name, real, real, errdefs.ErrFailedPrecondition)
		default:
			own, err := sn.Lowers(ctx, key)
			if err != nil {
				return ImageMount{}, err
			}
			upper = own[0]
		}
		work = sn.WorkDir(upper)
		if err := os.MkdirAll(work, 0o755); err != nil {
			return ImageMount{}, fmt.Errorf("mount %s at %s: %w", name, real, err)
		}
	}
	if hadLease {
		m.CreatedAt = old.CreatedAt
	}
	// Record first, mount second: a crash in between leaves a record
	// that unmount cleans up, never a mount nobody knows of.
	lease := mountLease(m)
	lease.Snapshots = append(chainStrings(il.ChainIDs), m.Writable)
	if m.Writable == "" {
		lease.Snapshots = lease.Snapshots[:len(lease.Snapshots)-1]
	}
	undo := func() {
		bg := context.WithoutCancel(ctx)
		if hadLease {
			_ = db.Leases().Put(bg, key, old)
		} else {
			_ = db.Leases().Delete(bg, key)
		}
		if created {
			_ = sn.Remove(bg, key)
		}
	}
	if err := db.Leases().Put(ctx, key, lease); err != nil {
		undo()
		return ImageMount{}, fmt.Errorf("mount %s at %s: record: %w", name, real, err)
	}
	if err := layers.MountAt(fd, lowers, upper, work, !opts.ReadWrite); err != nil {
		undo()
		return ImageMount{}, fmt.Errorf("mount %s at %s: %w", name, real, err)
	}
	slog.Info("image mounted", "image", name, "target", real, "writable", m.Writable)
	return m, nil
}

func chainStrings(ds []digest.Digest) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

func (s *Local) UnmountImage(ctx context.Context, target string, remove bool) (ImageMount, error) {
	if !filepath.IsAbs(target) {
		return ImageMount{}, fmt.Errorf("unmount target %q is not an absolute path: %w", target, errdefs.ErrInvalidArgument)
	}
	db, err := s.Index()
	if err != nil {
		return ImageMount{}, err
	}
	mountMu.Lock()
	defer mountMu.Unlock()
	candidates := []string{filepath.Clean(target)}
	if real, err := filepath.EvalSymlinks(target); err == nil && real != candidates[0] {
		candidates = append(candidates, real)
	}
	var lease index.Lease
	for _, c := range candidates {
		if lease, err = db.Leases().Get(ctx, mountKey(c)); err == nil || !errors.Is(err, errdefs.ErrNotFound) {
			break
		}
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		return ImageMount{}, fmt.Errorf("unmount %s: casfs has no image mount there: %w", target, errdefs.ErrNotFound)
	}
	if err != nil {
		return ImageMount{}, fmt.Errorf("unmount %s: %w", target, err)
	}
	m := mountFromLease(lease)
	if !m.Mounted && !remove {
		return m, fmt.Errorf("unmount %s: not mounted; its writable snapshot is kept (--rm removes it): %w", m.Target, errdefs.ErrFailedPrecondition)
	}
	if m.Mounted {
		if err := unmountTarget(m.Target); err != nil {
			return m, err
		}
		m.Mounted = false
	}
	key := mountKey(m.Target)
	if m.Writable != "" && !remove {
		l := mountLease(m)
		l.Snapshots = lease.Snapshots
		if err := db.Leases().Put(ctx, key, l); err != nil {
			return m, fmt.Errorf("unmount %s: record: %w", m.Target, err)
		}
		return m, nil
	}
	if m.Writable != "" {
		sn, err := s.Snapshotter()
		if err != nil {
			return m, err
		}
		if err := sn.Remove(ctx, m.Writable); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return m, fmt.Errorf("unmount %s: %w", m.Target, err)
		}
	}
	if err := db.Leases().Delete(ctx, key); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return m, fmt.Errorf("unmount %s: record: %w", m.Target, err)
	}
	s.changed()
	return m, nil
}

// unmountTarget unmounts target without following a symlink in its last
// component; a target that is no longer mounted is not an error.
func unmountTarget(target string) error {
	for {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			slog.Info("image mount was already gone", "target", target, "err", err)
			return nil
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("unmount %s: still in use: %w", target, errdefs.ErrInUse)
		}
		return fmt.Errorf("unmount %s: %w", target, err)
	}
}

// openMountTarget opens target without following a symlink in its last
// component and returns the descriptor that the mount is attached to (so
// that a path swapped after the checks cannot redirect it) and the real
// path. A target that is already a mount point is refused.
func openMountTarget(target string) (int, string, error) {
	if fi, err := os.Lstat(target); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return -1, "", fmt.Errorf("mount target %s does not exist: %w", target, errdefs.ErrNotFound)
		}
		return -1, "", fmt.Errorf("mount target %s: %w", target, unwrapPath(err))
	} else if fi.Mode()&os.ModeSymlink != 0 {
		return -1, "", fmt.Errorf("mount target %s is a symbolic link (name the directory itself): %w", target, errdefs.ErrInvalidArgument)
	} else if !fi.IsDir() {
		return -1, "", fmt.Errorf("mount target %s is not a directory: %w", target, errdefs.ErrInvalidArgument)
	}
	fd, err := unix.Open(target, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("mount target %s: %w", target, err)
	}
	real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || !filepath.IsAbs(real) || strings.HasSuffix(real, " (deleted)") {
		unix.Close(fd)
		return -1, "", fmt.Errorf("mount target %s: cannot tell its real path: %w", target, errdefs.ErrInvalidArgument)
	}
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &st); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("mount target %s: %w", target, err)
	}
	if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		unix.Close(fd)
		return -1, "", fmt.Errorf("mount target %s is already a mount point: %w", real, errdefs.ErrFailedPrecondition)
	}
	return fd, real, nil
}
