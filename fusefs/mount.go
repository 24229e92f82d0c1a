package fusefs

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	gfs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions are the per-mount settings.
type MountOptions struct {
	// AllowOther lets users other than the mounting one use the mount
	// (needed by other users and by bind mounts read by them).
	AllowOther bool
	// Debug logs every FUSE request (very verbose).
	Debug bool
	// FsName is the source shown in /proc/mounts: the store root.
	FsName string
	// Options are extra mount options such as "dev" and "suid" (from
	// mount(8)'s -o); "rw" is ignored, the mount is always read-only.
	Options []string
	// MaxStackDepth is how many stacked filesystems may lie under a
	// passthrough backing file: 1 (the default) when the store is on a plain
	// filesystem, 2 when it is on overlayfs. At 2 overlayfs can no longer use
	// a directory of this mount as a lower dir.
	MaxStackDepth int
}

// Mount mounts fs on mountpoint (type fuse.casfs) and serves it until the
// returned server is unmounted. It returns once the mount answers. ctx
// bounds only the mounting.
func Mount(ctx context.Context, mountpoint string, fs *FS, opts MountOptions) (*fuse.Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	imm := fs.opts.ImmutableTimeout
	neg := fs.opts.ListingTimeout
	mo := fuse.MountOptions{
		AllowOther: opts.AllowOther,
		Debug:      opts.Debug,
		FsName:     opts.FsName,
		Name:       "casfs",
		// The kernel checks modes and owners itself (rootfs trees carry
		// 0600 files) instead of asking the daemon.
		Options:              []string{"ro", "default_permissions"},
		DirectMount:          true, // we are root; fusermount3 is the fallback
		EnableSymlinkCaching: true, // link targets never change under one inode
		MaxStackDepth:        opts.MaxStackDepth,
		MaxBackground:        64,
		// Readahead and request size as large as the kernel takes: fewer
		// round trips when passthrough is not available.
		MaxWrite:     1 << 20,
		MaxReadAhead: 1 << 20,
		Logger:       log.New(slogWriter{fs.log}, "", 0),
	}
	if opts.Debug {
		mo.Logger = log.Default() // request traces are the point: do not hide them at debug level
	}
	for _, o := range opts.Options {
		switch o {
		case "rw", "ro", "default_permissions", "":
		default:
			mo.Options = append(mo.Options, o)
		}
	}
	gopts := &gfs.Options{
		MountOptions:    mo,
		EntryTimeout:    &imm,
		AttrTimeout:     &imm,
		NegativeTimeout: &neg,
		NullPermissions: true, // show a rootfs file's mode 000 as it is
		Logger:          log.New(slogWriter{fs.log}, "", 0),
		RootStableAttr:  &gfs.StableAttr{Ino: 1},
	}
	raw := newRawFS(gfs.NewNodeFS(fs.root, gopts), fs)
	fs.raw.Store(raw)
	srv, err := fuse.NewServer(raw, mountpoint, &gopts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount casfs on %s: %w", mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return nil, fmt.Errorf("mount casfs on %s: %w", mountpoint, err)
	}
	fs.server.Store(srv)
	if ks := srv.KernelSettings(); ks != nil {
		fs.log.Debug("fuse: mounted", "mountpoint", mountpoint, "kernel", fmt.Sprintf("%d.%d", ks.Major, ks.Minor),
			"passthrough_offered", ks.Flags64()&fuse.CAP_PASSTHROUGH != 0)
	}
	return srv, nil
}

// Unmount unmounts srv, retrying briefly while the mount is busy.
func Unmount(ctx context.Context, srv *fuse.Server) error {
	for {
		err := srv.Unmount()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("unmount casfs: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// slogWriter sends go-fuse's log.Logger lines to slog at debug level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("go-fuse: " + string(p))
	return len(p), nil
}
