package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/errdefs"
)

// dialTimeout bounds connecting to the socket, for the client and for the
// check whether a socket file still has a live server behind it.
const dialTimeout = 2 * time.Second

// socketLock is held for the life of a server, so that two daemons starting
// at once cannot both decide an old socket is stale and replace each other's.
type socketLock struct{ f *os.File }

func lockSocket(socketPath string) (*socketLock, error) {
	name := socketPath + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("api socket lock %s: %w", name, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another casfs process is serving %s: %w", socketPath, errdefs.ErrInUse)
		}
		return nil, fmt.Errorf("api socket lock %s: %w", name, err)
	}
	return &socketLock{f: f}, nil
}

func (l *socketLock) release() {
	if l != nil && l.f != nil {
		l.f.Close() // closing the last descriptor drops the flock
		l.f = nil
	}
}

// checkStale decides what to do with whatever is at socketPath: nothing, or a
// socket nobody answers on, may be replaced; a live socket means another
// server (ErrInUse); any other file is not ours to remove.
func checkStale(socketPath string) error {
	fi, err := os.Lstat(socketPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket %s: %w", socketPath, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("api socket %s exists and is not a socket: %w", socketPath, errdefs.ErrExists)
	}
	c, err := net.DialTimeout("unix", socketPath, dialTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("another casfs process is serving %s: %w", socketPath, errdefs.ErrInUse)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil // stale: its server died without removing it
	}
	return fmt.Errorf("api socket %s: cannot tell whether a server answers: %w", socketPath, err)
}

// listenPrivate creates the socket so that it is never reachable with a mode
// wider than 0600: it is bound inside a fresh 0700 directory next to the
// final path, narrowed to 0600 there, and then renamed into place. Renaming
// also replaces a stale socket in one step. Changing the umask instead would
// affect every goroutine of the daemon that creates files meanwhile.
func listenPrivate(socketPath string) (*net.UnixListener, os.FileInfo, error) {
	dir := filepath.Dir(socketPath)
	tmpDir, err := os.MkdirTemp(dir, ".casfs-sock-")
	if err != nil {
		return nil, nil, fmt.Errorf("api socket %s: %w", socketPath, err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if TooLong(socketPath) {
		return nil, nil, fmt.Errorf("api socket path %s is too long for a unix socket: %w", socketPath, errdefs.ErrInvalidArgument)
	}
	bindName := tmp
	if TooLong(tmp) {
		// The temporary name is longer than the final one: bind it through
		// the directory's descriptor, whose /proc name is short.
		d, err := os.Open(tmpDir)
		if err != nil {
			return nil, nil, fmt.Errorf("api socket %s: %w", socketPath, err)
		}
		defer d.Close()
		bindName = fmt.Sprintf("/proc/self/fd/%d/s", d.Fd())
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: bindName, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("api socket %s: %w", socketPath, err)
	}
	// The file is renamed away from the bound name, so the listener must
	// not unlink on Close; the server removes socketPath itself.
	l.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		l.Close()
		return nil, nil, fmt.Errorf("api socket %s: %w", socketPath, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, socketPath); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(socketPath)
	if err != nil {
		return fail(err)
	}
	return l, fi, nil
}

// TooLong reports whether path cannot be a unix socket's address: nobody
// could bind or dial it.
func TooLong(path string) bool { return len(path) >= len(unix.RawSockaddrUnix{}.Path) }

// removeIfOurs removes socketPath only when it is still the socket we
// created: a successor may already have replaced it.
func removeIfOurs(socketPath string, ours os.FileInfo) {
	if fi, err := os.Lstat(socketPath); err == nil && os.SameFile(fi, ours) {
		os.Remove(socketPath)
	}
}

// peerKey carries the connecting process's credentials in a request context.
type peerKey struct{}

type peer struct {
	uid, pid int
	err      error
}

// connContext records SO_PEERCRED of each accepted connection: the socket's
// 0600 mode already keeps others out, this keeps them out should the mode be
// loosened or the socket be passed on.
func connContext(ctx context.Context, c net.Conn) context.Context {
	p := peer{uid: -1}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		p.err = errors.New("not a unix socket connection")
		return context.WithValue(ctx, peerKey{}, p)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		p.err = err
		return context.WithValue(ctx, peerKey{}, p)
	}
	cerr := raw.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, p.err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if p.err == nil {
			p.uid, p.pid = int(cred.Uid), int(cred.Pid)
		}
	})
	if cerr != nil {
		p.err = cerr
	}
	return context.WithValue(ctx, peerKey{}, p)
}
