package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

var sentinels = []error{
	errdefs.ErrNotFound, errdefs.ErrExists, errdefs.ErrLocked, errdefs.ErrInvalidArgument,
	errdefs.ErrFailedPrecondition, errdefs.ErrDigestMismatch, errdefs.ErrUnavailable,
	errdefs.ErrInUse, errdefs.ErrNotImplemented, errdefs.ErrUnauthorized,
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type testServer struct {
	srv    *Server
	sock   string
	client *Client
}

// serve starts a server for s on a fresh socket and dials it.
func serve(t *testing.T, s store.API, tweak ...func(*Server)) *testServer {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "casfs.sock")
	srv := NewServer(s, ServerOptions{Logger: quietLogger()})
	for _, f := range tweak {
		f(srv)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), sock) }()
	select {
	case <-srv.Ready():
	case err := <-errc:
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Serve returned %v after Shutdown", err)
		}
	})
	c, err := Dial(sock)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &testServer{srv: srv, sock: sock, client: c}
}

// rawClient talks plain HTTP to a socket, for requests the Client never makes.
func rawClient(t *testing.T, sock string) *http.Client {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// sameErr checks that err (through the socket) reads exactly like want
// (embedded) and belongs to the same errdefs classes, including class.
func sameErr(t *testing.T, what string, err, want error, class error) {
	t.Helper()
	if want == nil || err == nil {
		t.Fatalf("%s: want errors on both sides, embedded %v, socket %v", what, want, err)
	}
	sameErrText(t, what, err, want, want.Error(), class)
}

// sameErrText is sameErr where the embedded call had to name a different
// thing (a fresh ref) and wantText is its message with that name replaced.
func sameErrText(t *testing.T, what string, err, want error, wantText string, class error) {
	t.Helper()
	if want == nil || err == nil {
		t.Fatalf("%s: want errors on both sides, embedded %v, socket %v", what, want, err)
	}
	if err.Error() != wantText {
		t.Errorf("%s: socket error %q, embedded %q", what, err, wantText)
	}
	if class != nil && !errors.Is(want, class) {
		t.Errorf("%s: embedded error %q is not %v", what, want, class)
	}
	for _, s := range sentinels {
		if errors.Is(err, s) != errors.Is(want, s) {
			t.Errorf("%s: errors.Is(%v): socket %v, embedded %v", what, s, errors.Is(err, s), errors.Is(want, s))
		}
	}
}

// sameResult checks that a call through the socket and the same call
// embedded agree: equal JSON results, or equal errors.
func sameResult[T any](t *testing.T, what string, got T, err error, want T, wantErr error) {
	t.Helper()
	if err != nil || wantErr != nil {
		sameErr(t, what, err, wantErr, nil)
		return
	}
	jsonEq(t, what, got, want)
}

func jsonEq(t *testing.T, what string, got, want any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("%s:\n socket   %s\n embedded %s", what, g, w)
	}
}

// backend is a store the API can be exercised over.
type backend struct {
	name    string
	open    func(t *testing.T) store.API
	corrupt func(t *testing.T, s store.API, d digest.Digest)
}

func fakeBackend() backend {
	return backend{
		name:    "fake",
		open:    func(t *testing.T) store.API { return newFakeStore() },
		corrupt: func(t *testing.T, s store.API, d digest.Digest) { s.(*fakeStore).corrupt(d) },
	}
}

// localBackend is the embedded store.
func localBackend() backend {
	return backend{
		name: "local",
		open: func(t *testing.T) store.API {
			s, err := store.Open(t.TempDir(), store.Options{Create: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		corrupt: func(t *testing.T, s store.API, d digest.Digest) {
			p := filepath.Join(s.(*store.Local).Root(), "blobs", "sha256", d.Encoded())
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			data[0] ^= 0xff
			if err := os.Chmod(p, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o444); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// localMissing probes store.Local with one ingest; a panic that says TODO
// means its parts are still stubs. Any other panic is a real failure.
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range []backend{fakeBackend(), localBackend()} {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

// failingReader yields data, then fails: a client that died mid-upload.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if errors.Is(err, io.EOF) {
		return n, f.err
	}
	return n, err
}
