package api

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
)

// A shutdown stops accepting at once, says how many requests it waits for,
// and lets a stream in flight finish whole before Serve returns.
func TestShutdownDrainsInFlight(t *testing.T) {
	f := newFakeStore()
	entered, release := make(chan struct{}), make(chan struct{})
	f.readContent = func(ctx context.Context, _ digest.Digest, w io.Writer) error {
		io.WriteString(w, "first half, ")
		close(entered)
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		_, err := io.WriteString(w, "second half")
		return err
	}
	drained := make(chan int, 1)
	sock := filepath.Join(t.TempDir(), "casfs.sock")
	srv := NewServer(f, ServerOptions{Logger: quietLogger(), OnDrain: func(n int) { drained <- n }})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), sock) }()
	<-srv.Ready()
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var got strings.Builder
	readErr := make(chan error, 1)
	go func() { readErr <- c.ReadContent(t.Context(), digest.FromString("x"), &got) }()
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	if n := <-drained; n != 1 {
		t.Fatalf("OnDrain saw %d requests in flight, want 1", n)
	}
	// No new connection is accepted while the stream finishes.
	if _, err := Dial(sock); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Dial while draining: %v, want not found (nobody accepts)", err)
	}
	close(release)
	if err := <-readErr; err != nil || got.String() != "first half, second half" {
		t.Fatalf("stream in flight during shutdown: %q, %v", got.String(), err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// A shutdown with nothing in flight does not report a drain.
func TestShutdownIdleReportsNoDrain(t *testing.T) {
	var calls atomic.Int32
	ts := serve(t, newFakeStore(), func(srv *Server) { srv.opts.OnDrain = func(int) { calls.Add(1) } })
	if _, err := ts.client.ListContent(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("OnDrain called %d times with no request in flight", n)
	}
}

// A client whose server stopped calls Reconnect, which starts another
// server on the same socket, and the call goes through to it.
func TestClientReconnects(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "casfs.sock")
	first, firstErr := startServe(t, sock)
	<-first.Ready()
	var reconnects atomic.Int32
	var second *Server
	secondErr := make(chan error, 1)
	c, err := DialWith(sock, DialOptions{Reconnect: func(ctx context.Context) error {
		reconnects.Add(1)
		var errc chan error
		second, errc = startServe(t, sock)
		select {
		case <-second.Ready():
			go func() { secondErr <- <-errc }()
			return nil
		case err := <-errc:
			return err
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ListContent(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := first.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-firstErr
	if _, err := c.ListContent(t.Context()); err != nil {
		t.Fatalf("call after the first server stopped: %v", err)
	}
	if n := reconnects.Load(); n != 1 {
		t.Fatalf("Reconnect called %d times, want 1", n)
	}
	if err := second.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-secondErr; err != nil {
		t.Fatal(err)
	}

	// When Reconnect cannot bring a server back, the call says why.
	third, thirdErr := startServe(t, sock)
	<-third.Ready()
	c2, err := DialWith(sock, DialOptions{Reconnect: func(context.Context) error {
		return errors.New("store is held by process 42, which serves no socket")
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	third.Shutdown(t.Context())
	<-thirdErr
	_, err = c2.ListContent(t.Context())
	if err == nil || !strings.Contains(err.Error(), "held by process 42, which serves no socket") {
		t.Fatalf("call when Reconnect fails: %v, want its reason", err)
	}
}
