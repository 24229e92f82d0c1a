// Package daemon runs the casfs daemon: it owns the store, serves the store
// API on <root>/casfs.sock, and shows the store as a FUSE filesystem, as a
// read-only OCI registry, or both, until it is told to stop; then it
// unmounts, stops serving and releases the store. Open is how a command
// reaches a store: through the socket of the process holding it, or by
// holding it and serving the socket itself while it runs (holder.go).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/api"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/fusefs"
	"github.com/casfs/casfs/internal/hugeheap"
	"github.com/casfs/casfs/layers"
	"github.com/casfs/casfs/serve"
	"github.com/casfs/casfs/store"
)

// Config is one daemon: a mount, a registry server, or both.
type Config struct {
	Root string
	// Mountpoint is where the FUSE filesystem goes; "" for none.
	Mountpoint string
	// Serve, when set, serves the store as a read-only registry.
	Serve *serve.ListenConfig
	// Listening is told the registry's URL once it and the mount answer.
	Listening  func(url string)
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
	// Limits bound what unpacking layers reads (store.Options.Limits).
	Limits layers.ApplyOptions
	Logger *slog.Logger
}

// apiGrace is how long a stopping daemon lets requests finish before it
// cancels them.
const apiGrace = 5 * time.Second

// socketPath is where the daemon of root serves the store API.
func socketPath(root string) string { return filepath.Join(root, "casfs.sock") }

// Run mounts and serves until ctx is cancelled. ready is called once the
// mount answers and the socket accepts requests.
func Run(ctx context.Context, cfg Config, ready func()) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Mountpoint == "" && cfg.Serve == nil {
		return fmt.Errorf("nothing to run: no mountpoint and no registry address: %w", errdefs.ErrInvalidArgument)
	}
	var mnt string
	if cfg.Mountpoint != "" {
		var err error
		if mnt, err = checkMountpoint(cfg.Mountpoint, log); err != nil {
			return err
		}
		if isFUSEMountRoot(mnt) {
			return fmt.Errorf("mountpoint %s: a FUSE filesystem is already mounted there (umount it first): %w", mnt, errdefs.ErrExists)
		}
	}

	// Huge pages for the heap during bursts of allocation (hugeheap says
	// why), reserved at the first.
	hugeheap.ReserveAtFirstBurst(heapReserve)
	st, err := store.Open(cfg.Root, store.Options{Create: true, Limits: cfg.Limits})
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Index(); err != nil {
		// Another process holds the store: say so before mounting anything.
		return heldForDaemon(st.Root(), err)
	}
	if _, err := st.Snapshotter(); err != nil {
		return err
	}

	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 60 * time.Second
	}
	st.EnableLazyFetch(cfg.Registry, cfg.FetchTimeout)

	// The filesystem exists only when mounting; the socket's debug
	// endpoint reports on it.
	var fsys *fusefs.FS
	if mnt != "" {
		fsys = fusefs.New(newSource(st), fusefs.Options{Logger: log, StatfsPath: st.Root(), PublicBlobs: cfg.PublicBlobs})
		st.OnChange(fsys.Invalidate)
	}

	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	_, serveErr, err := startAPI(srvCtx, st, api.ServerOptions{Logger: log, Debug: debugHandler(fsys), ShutdownGrace: apiGrace})
	if err != nil {
		return err
	}

	regErr := make(chan error, 1)
	var regURL string
	if cfg.Serve != nil {
		ln, err := serve.Listen(*cfg.Serve)
		if err != nil {
			return err
		}
		reg := serve.New(registrySource{st}, serve.Options{Logger: log})
		regDone := make(chan struct{})
		defer func() { stopServer(); <-regDone }()
		go func() { defer close(regDone); regErr <- reg.Serve(srvCtx, ln) }()
		regURL = registryURL(*cfg.Serve, ln.Addr())
		log.Info("casfs serving the store as a registry", "root", st.Root(), "url", regURL)
	}

	var fsDone <-chan struct{}
	var fsSrv *fuse.Server
	if mnt != "" {
		if fsSrv, fsDone, err = mountStore(ctx, st, fsys, mnt, cfg, log); err != nil {
			return err
		}
	}
	if regURL != "" && cfg.Listening != nil {
		cfg.Listening(regURL)
	}
	if ready != nil {
		ready()
	}

	select {
	case <-ctx.Done():
		log.Info("casfs stopping", "root", st.Root())
	case <-fsDone:
		log.Info("casfs was unmounted from outside", "mountpoint", mnt)
	case err := <-serveErr:
		log.Error("store API stopped", "err", err)
		serveErr <- err
	case err := <-regErr:
		log.Error("registry server stopped", "err", err)
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
	if fsSrv == nil {
		return nil
	}
	uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-fsDone:
	default:
		if err := fusefs.Unmount(uctx, fsSrv); err != nil {
			// Busy (a process has its cwd inside): detach so the store is released.
			log.Warn("unmount busy, detaching", "mountpoint", mnt, "err", err)
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", mnt, err)
			}
		}
	}
	return nil
}

// checkMountpoint clears a stale mount and checks the mountpoint is a
// directory; it returns its absolute path.
func checkMountpoint(mountpoint string, log *slog.Logger) (string, error) {
	mnt, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", err
	}
	if err := clearStaleMount(mnt, log); err != nil {
		return "", err
	}
	if fi, err := os.Stat(mnt); err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", mnt, unwrapPath(err))
	} else if !fi.IsDir() {
		return "", fmt.Errorf("mountpoint %s is not a directory", mnt)
	}
	return mnt, nil
}

// mountStore shows st at mnt; the channel closes when the mount is gone.
func mountStore(ctx context.Context, st *store.Local, fsys *fusefs.FS, mnt string, cfg Config, log *slog.Logger) (*fuse.Server, <-chan struct{}, error) {
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	srv, err := fusefs.Mount(mctx, mnt, fsys, fusefs.MountOptions{
		AllowOther: cfg.AllowOther, Debug: cfg.Debug, FsName: st.Root(),
		Options: cfg.Options, MaxStackDepth: cfg.MaxStackDepth,
	})
	cancel()
	if err != nil {
		return nil, nil, err
	}
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	log.Info("casfs mounted", "root", st.Root(), "mountpoint", mnt, "socket", socketPath(st.Root()))
	return srv, served, nil
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

// isFUSEMountRoot reports whether a live FUSE mount has its root at mnt:
// mounting there again would stack a second mount over it.
func isFUSEMountRoot(mnt string) bool {
	const fuseSuperMagic = 0x65735546
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil || st.Type != fuseSuperMagic {
		return false
	}
	var self, parent unix.Stat_t
	if unix.Stat(mnt, &self) != nil || unix.Stat(filepath.Dir(mnt), &parent) != nil {
		return false
	}
	return self.Dev != parent.Dev
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
