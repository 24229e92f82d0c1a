// Package daemon runs the casfs mount: it owns the store, shows it as a FUSE
// filesystem and serves the store API on <root>/casfs.sock, until it is told
// to stop, then unmounts and releases the store.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/api"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/fusefs"
	"github.com/casfs/casfs/store"
)

// Config is one mount.
type Config struct {
	Root       string
	Mountpoint string
	AllowOther bool
	Debug      bool
	// Options are mount(8)-style options passed on to the kernel (dev, suid, ...).
	Options []string
	// MaxStackDepth is 2 when the store root is on overlayfs.
	MaxStackDepth int
	// Registry is how lazy reads reach registries; FetchTimeout bounds each
	// lazy fetch (a read of a missing blob gets EIO after it).
	Registry     store.RegistryOptions
	FetchTimeout time.Duration
	// PublicBlobs opens blobs in the mount to every user (fusefs.Options).
	PublicBlobs bool
	Logger      *slog.Logger
}

// apiGrace is how long a stopping daemon lets requests finish before it
// cancels them.
const apiGrace = 5 * time.Second

// SocketPath is where the daemon of root serves the store API.
func SocketPath(root string) string { return filepath.Join(root, "casfs.sock") }

// Run mounts and serves until ctx is cancelled. ready is called once the
// mount answers and the socket accepts requests.
func Run(ctx context.Context, cfg Config, ready func()) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	mnt, err := filepath.Abs(cfg.Mountpoint)
	if err != nil {
		return err
	}
	if err := clearStaleMount(mnt, log); err != nil {
		return err
	}
	if fi, err := os.Stat(mnt); err != nil {
		return fmt.Errorf("mountpoint %s: %w", mnt, unwrapPath(err))
	} else if !fi.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", mnt)
	}

	st, err := store.Open(cfg.Root, store.Options{Create: true})
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Index(); err != nil {
		return err // another process holds the store: say so before mounting anything
	}
	if _, err := st.Snapshotter(); err != nil {
		return err
	}

	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 60 * time.Second
	}
	st.EnableLazyFetch(cfg.Registry, cfg.FetchTimeout)

	src := newSource(st)
	fsys := fusefs.New(src, fusefs.Options{Logger: log, PublicBlobs: cfg.PublicBlobs})
	st.OnChange(func() {
		src.forget()
		fsys.Invalidate()
	})

	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	apiSrv := api.NewServer(st, api.ServerOptions{Logger: log, ShutdownGrace: apiGrace})
	serveErr := make(chan error, 1)
	go func() { serveErr <- apiSrv.Serve(srvCtx, SocketPath(st.Root())) }()
	select {
	case <-apiSrv.Ready():
	case err := <-serveErr:
		return fmt.Errorf("serve %s: %w", SocketPath(st.Root()), err)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("serve %s: socket not ready within 10s: %w", SocketPath(st.Root()), errdefs.ErrUnavailable)
	}

	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	srv, err := fusefs.Mount(mctx, mnt, fsys, fusefs.MountOptions{
		AllowOther: cfg.AllowOther, Debug: cfg.Debug, FsName: st.Root(),
		Options: cfg.Options, MaxStackDepth: cfg.MaxStackDepth,
	})
	cancel()
	if err != nil {
		return err
	}
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	log.Info("casfs mounted", "root", st.Root(), "mountpoint", mnt, "socket", SocketPath(st.Root()))
	if ready != nil {
		ready()
	}

	select {
	case <-ctx.Done():
		log.Info("casfs stopping", "mountpoint", mnt)
	case <-served:
		log.Info("casfs was unmounted from outside", "mountpoint", mnt)
	case err := <-serveErr:
		log.Error("store API stopped", "err", err)
		serveErr <- err
	}
	stopServer()
	// Requests still running (a pull) get the grace to finish, then are
	// cancelled; wait for them to unwind, so that they release their leases
	// before the store closes.
	select {
	case <-serveErr:
	case <-time.After(apiGrace + 10*time.Second):
		log.Warn("requests still running after the shutdown grace; closing the store under them")
	}
	uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-served:
	default:
		if err := fusefs.Unmount(uctx, srv); err != nil {
			// Busy (a process has its cwd inside): detach so the store is released.
			log.Warn("unmount busy, detaching", "mountpoint", mnt, "err", err)
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", mnt, err)
			}
		}
	}
	return nil
}

// clearStaleMount detaches a FUSE mount left by a daemon that died: its
// mountpoint answers ENOTCONN. statfs, not stat: the kernel may answer a
// stat from its attribute cache after the daemon is gone.
func clearStaleMount(mnt string, log *slog.Logger) error {
	var st unix.Statfs_t
	err := unix.Statfs(mnt, &st)
	if !errors.Is(err, unix.ENOTCONN) {
		return nil
	}
	log.Warn("clearing stale casfs mount left by a daemon that died", "mountpoint", mnt)
	if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("clear stale mount on %s: %w", mnt, err)
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
