package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/casfs/casfs/api"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/layers"
	"github.com/casfs/casfs/store"
)

// OpenOptions are how one command reaches a store root.
type OpenOptions struct {
	// Create makes the root when it does not exist (commands that write).
	Create bool
	// Limits bound unpacking when this process opens the store itself.
	Limits layers.ApplyOptions
	// Wait bounds how long a command that finds the store held waits for
	// the holder's socket to answer (default defaultHolderWait).
	Wait time.Duration
	// Notice receives the lines a holder prints while it finishes other
	// commands' requests; nil discards them.
	Notice io.Writer
	// ThroughSocket is called when the store is reached through another
	// process's socket (its unpack limits apply, not Limits).
	ThroughSocket func()
	Logger        *slog.Logger
}

// defaultHolderWait is how long a command waits for the socket of a
// process that holds the store: a command that took the store a moment
// earlier serves its socket within milliseconds.
const defaultHolderWait = 5 * time.Second

// Open reaches the store at root for one command. When a process serves
// the root's socket (the mount daemon, or another command), the result is
// a client of it. Otherwise this process opens the store, and serves the
// socket itself until Close, so that commands started meanwhile go through
// it; Close then stops accepting, finishes their requests and releases the
// store. A connection refused later (the holder just stopped) makes the
// client open the store itself, or go through the next holder.
func Open(ctx context.Context, root string, opts OpenOptions) (store.API, error) {
	if opts.Wait <= 0 {
		opts.Wait = defaultHolderWait
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	o := &opener{root: root, opts: opts}
	client, err := o.reach(ctx)
	if err != nil {
		return nil, err
	}
	if client == nil {
		return &session{API: o.held.st, o: o}, nil
	}
	if opts.ThroughSocket != nil {
		opts.ThroughSocket()
	}
	return &session{API: client, o: o}, nil
}

// opener reaches one root for one command, at Open and again when the
// socket it went through stops answering.
type opener struct {
	root string
	opts OpenOptions

	mu   sync.Mutex
	held *holding // set once this process holds the store
}

// reach returns a client of the root's socket, or nil once this process
// holds the store (o.held). A store held by a process whose socket does not
// answer within opts.Wait is an error naming that process; a holder that is
// finishing other commands' requests (its socket still there, closed to new
// connections) is waited for as long as it takes, with one notice: it ends
// when they do, and the caller's context (Ctrl-C) bounds the wait.
func (o *opener) reach(ctx context.Context) (*api.Client, error) {
	sock := socketPath(o.root)
	deadline := time.Now().Add(o.opts.Wait)
	pause := 10 * time.Millisecond
	finishing := false
	for {
		client, err := api.DialWith(sock, api.DialOptions{Reconnect: o.reconnect})
		if err == nil {
			return client, nil
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return nil, err
		}
		h, err := o.hold()
		if err == nil {
			o.held = h
			return nil, nil
		}
		if !errors.Is(err, errdefs.ErrInUse) {
			return nil, err
		}
		// Another process took the store a moment ago and is starting to
		// serve, or is finishing and about to let go: look again shortly.
		// Once seen finishing, it is waited for until it lets go (its last
		// step, closing the store, comes after its socket is gone).
		if !finishing && isSocket(sock) {
			finishing = true
			if o.opts.Notice != nil {
				fmt.Fprintf(o.opts.Notice, "casfs: %s is finishing other commands' requests; waiting for it (Ctrl-C to give up)\n", holderName(o.root))
			}
		}
		if !finishing && time.Now().After(deadline) {
			return nil, holderError(o.root, noSocket)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// isSocket reports whether a socket file is at path. Found while the store
// is held and nobody answers on it, it is the holder's, closed to new
// connections while it finishes (or a killed holder's, about to be
// replaced by the process that now holds the lock).
func isSocket(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode().Type() == os.ModeSocket
}

// reconnect runs when the client's socket stopped answering: the process
// that served it finished. This process then goes through the next holder
// or becomes it, and serves the socket its client dials.
func (o *opener) reconnect(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.held != nil {
		return nil // we serve it; the server itself stopped only at Close
	}
	client, err := o.reach(ctx)
	if client != nil {
		client.Close()
	}
	return err
}

// holding is this process's hold on the store and its socket.
type holding struct {
	st     *store.Local
	srv    *api.Server // nil when the socket could not be served
	served chan error  // Serve's result
}

// hold opens the store in this process and serves its socket; an error
// wrapping errdefs.ErrInUse means another process holds the store.
func (o *opener) hold() (*holding, error) {
	st, err := store.Open(o.root, store.Options{Create: o.opts.Create, Limits: o.opts.Limits})
	if err != nil {
		return nil, err
	}
	if _, err := st.Index(); err != nil {
		st.Close()
		return nil, err
	}
	if api.TooLong(socketPath(st.Root())) {
		// Nobody could dial it: others are told the store is held.
		o.opts.Logger.Debug("store root too long for a socket; not serving it to other commands", "root", st.Root())
		return &holding{st: st}, nil
	}
	notice := o.opts.Notice
	srv, served, err := startAPI(context.Background(), st, api.ServerOptions{Logger: o.opts.Logger, OnDrain: func(n int) {
		if notice != nil {
			fmt.Fprintf(notice, "casfs: waiting for %s from another casfs command\n", plural(n, "request"))
		}
	}})
	if err != nil {
		// This command still works; others started meanwhile are told
		// that the store is held and nobody serves its socket.
		o.opts.Logger.Warn("cannot serve the store's socket to other commands", "err", err)
		return &holding{st: st}, nil
	}
	return &holding{st: st, srv: srv, served: served}, nil
}

// release stops accepting connections, lets the requests of other commands
// finish (each bounded by its own client's context), and closes the store.
func (h *holding) release() error {
	if h.srv != nil {
		h.srv.Shutdown(context.Background())
		<-h.served
	}
	return h.st.Close()
}

// startAPI serves st on its socket until ctx ends or Shutdown, and returns
// once the socket accepts connections; served gets Serve's result.
func startAPI(ctx context.Context, st *store.Local, opts api.ServerOptions) (*api.Server, chan error, error) {
	sock := socketPath(st.Root())
	srv := api.NewServer(st, opts)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, sock) }()
	select {
	case <-srv.Ready():
		return srv, served, nil
	case err := <-served:
		return nil, nil, fmt.Errorf("serve %s: %w", sock, err)
	case <-time.After(10 * time.Second):
		srv.Shutdown(context.Background())
		return nil, nil, fmt.Errorf("serve %s: socket not ready within 10s: %w", sock, errdefs.ErrUnavailable)
	}
}

// session is the store one command uses: a client of another process's
// socket, or the store this process holds (and serves to others).
type session struct {
	store.API
	o *opener
}

// Socket is the socket the session goes through, "" when this process
// holds the store (see api.Remote).
func (s *session) Socket() string {
	if c, ok := s.API.(*api.Client); ok {
		return c.Socket()
	}
	return ""
}

// Close ends the command's use of the store; a holder finishes the other
// commands' requests first.
func (s *session) Close() error {
	var err error
	if c, ok := s.API.(*api.Client); ok {
		err = c.Close()
	}
	s.o.mu.Lock()
	h := s.o.held
	s.o.held = nil
	s.o.mu.Unlock()
	if h != nil {
		if herr := h.release(); err == nil {
			err = herr
		}
	}
	return err
}

// heldForDaemon turns a failure to take the store for a mount or a
// registry server into what is true: which process holds it, and whether
// commands can go through it meanwhile.
func heldForDaemon(root string, err error) error {
	if !errors.Is(err, errdefs.ErrInUse) {
		return err
	}
	if c, derr := api.Dial(socketPath(root)); derr == nil {
		c.Close()
		return holderError(root, "serves its socket: commands go through it, but a mount or registry server needs the store to itself (start it once that process has ended)")
	}
	return holderError(root, noSocket)
}

// holderError says which process holds the store at root and what that
// means for the caller; it wraps errdefs.ErrInUse.
func holderError(root, what string) error {
	return heldError("store " + absRoot(root) + " is held by " + holderName(root) + ", which " + what)
}

// holderName names the process holding the store at root: "process PID
// (COMMAND LINE)" as far as the kernel tells.
func holderName(root string) string {
	pid := index.LockHolder(filepath.Join(absRoot(root), "meta"))
	if pid <= 0 {
		return "another process"
	}
	who := fmt.Sprintf("process %d", pid)
	if cmd := commandLine(pid); cmd != "" {
		who += " (" + cmd + ")"
	}
	return who
}

func absRoot(root string) string {
	if abs, err := filepath.Abs(root); err == nil {
		return abs
	}
	return root
}

// heldError is errdefs.ErrInUse with the whole message, without repeating
// the sentinel's text.
type heldError string

func (e heldError) Error() string { return string(e) }
func (heldError) Unwrap() error   { return errdefs.ErrInUse }

// noSocket is what a caller is told of a holder that serves no socket: it
// may be starting, finishing, or a casfs that does not serve one.
const noSocket = "serves no socket; wait for it to finish, or stop it"

// commandLine is pid's command line, shortened for one line of error.
func commandLine(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	args := strings.Fields(strings.ReplaceAll(string(b), "\x00", " "))
	if len(args) > 0 {
		args[0] = filepath.Base(args[0])
	}
	s := strings.Join(args, " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
