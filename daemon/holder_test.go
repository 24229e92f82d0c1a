package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/api"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/store"
)

func open(t *testing.T, root string, opts OpenOptions) store.API {
	t.Helper()
	opts.Create = true
	opts.Logger = quiet
	s, err := Open(t.Context(), root, opts)
	if err != nil {
		t.Fatalf("open %s: %v", root, err)
	}
	return s
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// lines is a Notice writer whose lines a test can wait for.
type lines chan string

func (l lines) Write(p []byte) (int, error) { l <- string(p); return len(p), nil }

// firstRead tells when the transport starts sending an upload: the server
// has sent 100 Continue, so the request is being handled.
type firstRead struct {
	r       io.Reader
	started chan struct{}
}

func (f *firstRead) Read(p []byte) (int, error) {
	select {
	case <-f.started:
	default:
		close(f.started)
	}
	return f.r.Read(p)
}

// The first command holds the store and serves its socket; a second goes
// through it. When the first is done, it stops accepting, says what it waits
// for, and finishes the second's upload before it lets go; the second's
// next call then finds nobody serving and takes the store itself.
func TestOpenServesOtherCommandsAndDrains(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	notices := make(lines, 1)
	first := open(t, root, OpenOptions{Notice: notices})
	second := open(t, root, OpenOptions{})
	if api.Remote(first) || !api.Remote(second) {
		t.Fatalf("remote: first %v, second %v; want the second through the first's socket", api.Remote(first), api.Remote(second))
	}

	pr, pw := io.Pipe()
	body := &firstRead{r: pr, started: make(chan struct{})}
	type result struct {
		info store.ContentInfo
		err  error
	}
	ingested := make(chan result, 1)
	go func() {
		info, err := second.Ingest(t.Context(), "slow", body, store.IngestOptions{})
		ingested <- result{info, err}
	}()
	go pw.Write([]byte("part one, "))
	<-body.started

	closed := make(chan error, 1)
	go func() { closed <- first.Close() }()
	if got, want := <-notices, "casfs: waiting for 1 request from another casfs command\n"; got != want {
		t.Fatalf("notice %q, want %q", got, want)
	}
	// A command started now waits for the finishing holder, however short
	// its own wait for a socket is, and says so.
	laterNotices := make(lines, 1)
	type opened struct {
		s   store.API
		err error
	}
	later := make(chan opened, 1)
	go func() {
		s, err := Open(t.Context(), root, OpenOptions{Wait: 1, Notice: laterNotices, Logger: quiet})
		later <- opened{s, err}
	}()
	want := fmt.Sprintf("casfs: process %d (", os.Getpid())
	select {
	case got := <-laterNotices:
		if !strings.HasPrefix(got, want) || !strings.HasSuffix(got, ") is finishing other commands' requests; waiting for it (Ctrl-C to give up)\n") {
			t.Fatalf("notice of a command waiting for the finishing holder: %q", got)
		}
	case o := <-later:
		t.Fatalf("a command started while the holder finished did not wait for it: %v", o.err)
	}

	go func() {
		pw.Write([]byte("part two"))
		pw.Close()
	}()
	r := <-ingested
	if want := digest.FromString("part one, part two"); r.err != nil || r.info.Digest != want {
		t.Fatalf("upload in flight while the holder stopped: %v %v, want %s", r.info.Digest, r.err, want)
	}
	if err := <-closed; err != nil {
		t.Fatalf("holder Close: %v", err)
	}
	third := <-later
	if third.err != nil {
		t.Fatalf("command started while the holder finished: %v", third.err)
	}
	if api.Remote(third.s) {
		t.Fatal("the command that waited did not take the store")
	}

	// The second command's next call goes through the new holder.
	infos, err := second.ListContent(t.Context())
	if err != nil || len(infos) != 1 || infos[0].Digest != r.info.Digest {
		t.Fatalf("list after the holder left: %v %v", infos, err)
	}
	if err := third.s.Close(); err != nil {
		t.Fatal(err)
	}
	// Now nobody serves: the second command takes the store itself.
	if _, err := second.ListContent(t.Context()); err != nil {
		t.Fatalf("list after the second holder left: %v", err)
	}
	fourth := open(t, root, OpenOptions{})
	if !api.Remote(fourth) {
		t.Fatal("a fourth command did not go through the second's socket")
	}
	fourth.Close()
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(socketPath(root)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind after the last holder: %v", err)
	}
}

// A store held by a process that serves no socket: the command waits for
// it, bounded, then says who holds it; once it lets go, the command opens.
func TestOpenHeldWithoutSocket(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	db, err := index.Open(filepath.Join(root, "meta"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), root, OpenOptions{Wait: 1, Logger: quiet})
	want := fmt.Sprintf("store %s is held by process %d (", root, os.Getpid())
	if !errors.Is(err, errdefs.ErrInUse) || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "which serves no socket; wait for it to finish, or stop it") {
		t.Fatalf("open of a store held without a socket: %v, want ErrInUse starting %q", err, want)
	}

	opened := make(chan error, 1)
	go func() {
		s, err := Open(context.Background(), root, OpenOptions{Wait: cmdWait, Logger: quiet})
		if err == nil {
			if api.Remote(s) {
				err = errors.New("went through a socket nobody should serve")
			}
			s.Close()
		}
		opened <- err
	}()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("open once the holder let go: %v", err)
	}
}

// cmdWait is long enough for a test on a loaded machine; it bounds a
// failure, never a passing run.
const cmdWait = 60e9

// A socket left by a holder that was killed: the next command finds the
// lock free, opens the store and replaces the socket with its own.
func TestOpenReplacesStaleSocket(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	if err := os.MkdirAll(root, 0o711); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socketPath(root), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	first := open(t, root, OpenOptions{})
	if api.Remote(first) {
		t.Fatal("went through a stale socket")
	}
	second := open(t, root, OpenOptions{})
	if !api.Remote(second) {
		t.Fatal("the stale socket was not replaced by the holder's")
	}
	if _, err := second.ListContent(t.Context()); err != nil {
		t.Fatal(err)
	}
	second.Close()
	first.Close()
}
