package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/casfs/casfs/errdefs"
)

func TestSocketMode(t *testing.T) {
	ts := serve(t, newFakeStore())
	fi, err := os.Lstat(ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	// Nothing but the socket and its lock is left beside it.
	ents, err := os.ReadDir(filepath.Dir(ts.sock))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"casfs.sock", "casfs.sock.lock"}) {
		t.Errorf("socket directory holds %v", names)
	}
}

func startServe(t *testing.T, sock string) (*Server, chan error) {
	t.Helper()
	srv := NewServer(newFakeStore(), ServerOptions{Logger: quietLogger()})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), sock) }()
	return srv, errc
}

func TestSecondServeIsInUse(t *testing.T) {
	ts := serve(t, newFakeStore())
	_, errc := startServe(t, ts.sock)
	if err := <-errc; !errors.Is(err, errdefs.ErrInUse) {
		t.Fatalf("second Serve on %s: %v, want store in use", ts.sock, err)
	}
	// The first server is untouched.
	if _, err := ts.client.ListContent(t.Context()); err != nil {
		t.Errorf("first server after a refused second: %v", err)
	}
}

func TestLiveSocketWithoutLockIsInUse(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "casfs.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, errc := startServe(t, sock)
	if err := <-errc; !errors.Is(err, errdefs.ErrInUse) {
		t.Fatalf("Serve over a live foreign socket: %v, want store in use", err)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("the live socket was touched: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "casfs.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // a daemon that died: the file stays, nobody listens
	if _, err := Dial(sock); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Dial of a stale socket: %v, want not found", err)
	}
	srv, errc := startServe(t, sock)
	select {
	case <-srv.Ready():
	case err := <-errc:
		t.Fatalf("Serve over a stale socket: %v", err)
	}
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ListContent(t.Context()); err != nil {
		t.Errorf("server that replaced a stale socket: %v", err)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("replaced socket: %v %v", fi.Mode(), err)
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind after Shutdown: %v", err)
	}
	if _, err := Dial(sock); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Dial after Shutdown: %v, want not found", err)
	}
}

func TestServeRefusesNonSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "casfs.sock")
	if err := os.WriteFile(sock, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errc := startServe(t, sock)
	if err := <-errc; err == nil || !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("Serve over a regular file: %v, want an error wrapping already exists", err)
	}
	if data, err := os.ReadFile(sock); err != nil || string(data) != "keep me" {
		t.Errorf("regular file was changed: %q %v", data, err)
	}
	if _, err := Dial(sock); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Dial of a regular file: %v, want not found", err)
	}
}

func TestDialWithoutDaemon(t *testing.T) {
	_, err := Dial(filepath.Join(t.TempDir(), "casfs.sock"))
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Dial without a socket: %v, want not found", err)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "casfs.sock")
	srv := NewServer(newFakeStore(), ServerOptions{Logger: quietLogger()})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, sock) }()
	<-srv.Ready()
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve after its context ended: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	// Once stopped, the lock is free: a new server may take the path.
	srv2, errc2 := startServe(t, sock)
	select {
	case <-srv2.Ready():
	case err := <-errc2:
		t.Fatalf("Serve after a stopped server: %v", err)
	}
	srv2.Shutdown(t.Context())
	<-errc2
}

func TestForeignPeerRefused(t *testing.T) {
	var mu sync.Mutex
	var asked []int
	ts := serve(t, newFakeStore(), func(srv *Server) {
		srv.allowPeer = func(uid int) bool {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, uid)
			return false
		}
	})
	_, err := ts.client.ListContent(t.Context())
	if !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("request from a refused peer: %v, want unauthorized", err)
	}
	resp, err := rawClient(t, ts.sock).Get("http://casfs/v1/content")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("refused peer got %s, want 403", resp.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) == 0 || asked[0] != os.Getuid() {
		t.Errorf("peer check saw uids %v, want ours (%d)", asked, os.Getuid())
	}
}

func TestDefaultPeerPolicy(t *testing.T) {
	srv := NewServer(newFakeStore(), ServerOptions{})
	if !srv.allowPeer(0) || !srv.allowPeer(os.Getuid()) {
		t.Error("root and the daemon's own uid must be allowed")
	}
	if os.Getuid() != 4242 && srv.allowPeer(4242) {
		t.Error("another uid was allowed")
	}
}

// A root whose socket path fits in a unix address, but not the temporary
// name it is bound under first, still gets its socket; a longer one is
// refused with the reason.
func TestSocketPathNearTheLimit(t *testing.T) {
	// A short base under /tmp: TMPDIR may be too long to leave room.
	base, err := os.MkdirTemp("/tmp", "s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	pad := 92 - len(base) - 1
	dir := filepath.Join(base, strings.Repeat("d", pad))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "casfs.sock")
	if TooLong(sock) || !TooLong(filepath.Join(dir, ".casfs-sock-1234567890", "s")) {
		t.Fatalf("case not built: %d-byte socket path", len(sock))
	}
	srv, errc := startServe(t, sock)
	select {
	case <-srv.Ready():
	case err := <-errc:
		t.Fatalf("Serve on a %d-byte path: %v", len(sock), err)
	}
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ListContent(t.Context()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v %v", fi.Mode(), err)
	}
	srv.Shutdown(t.Context())
	<-errc

	long := filepath.Join(dir, strings.Repeat("s", 20))
	_, errc = startServe(t, long)
	if err := <-errc; !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "too long for a unix socket") {
		t.Fatalf("Serve on a %d-byte path: %v, want too long", len(long), err)
	}
}
