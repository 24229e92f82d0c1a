package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// ServerOptions tune a Server; the zero value is ready to use.
type ServerOptions struct {
	// Logger receives request failures; nil means slog.Default().
	Logger *slog.Logger
	// MaxJSONBody caps the body of JSON requests (default 1 MiB). Data
	// uploads (ingest, import) stream and have no cap.
	MaxJSONBody int64
	// ReadHeaderTimeout bounds reading a request's headers (default 10 s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long (default 2 min).
	IdleTimeout time.Duration
	// ShutdownGrace is how long in-flight requests may take to finish when
	// Serve's context is cancelled (default 5 s).
	ShutdownGrace time.Duration
	// Debug, when set, serves GET /debug/... next to the API (the mount
	// daemon's memory figures).
	Debug http.Handler
	// OnDrain, when set, is told how many requests are still running once
	// a shutdown has stopped accepting connections and waits for them
	// (only when there are any).
	OnDrain func(inFlight int)
}

// defaultMaxJSONBody is the cap on JSON request bodies.
const defaultMaxJSONBody = 1 << 20

func (o ServerOptions) withDefaults() ServerOptions {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxJSONBody <= 0 {
		o.MaxJSONBody = defaultMaxJSONBody
	}
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 5 * time.Second
	}
	return o
}

// Server serves a store.API over HTTP+JSON on a unix socket.
type Server struct {
	store store.API
	opts  ServerOptions
	log   *slog.Logger
	// allowPeer decides whether a connecting uid may use the API.
	allowPeer func(uid int) bool

	// inFlight counts the requests being handled.
	inFlight atomic.Int64

	mu       sync.Mutex
	hs       *http.Server
	abort    context.CancelFunc // cancels every in-flight request
	started  bool
	closed   bool
	ready    chan struct{}
	shutdown chan struct{} // closed by Shutdown
	done     chan struct{} // closed when Serve has cleaned up
}

// NewServer returns a server for s; Serve starts it.
func NewServer(s store.API, opts ServerOptions) *Server {
	opts = opts.withDefaults()
	own := os.Getuid()
	return &Server{
		store:     s,
		opts:      opts,
		log:       opts.Logger,
		allowPeer: func(uid int) bool { return uid == 0 || uid == own },
		ready:     make(chan struct{}),
		shutdown:  make(chan struct{}),
		done:      make(chan struct{}),
	}
}

// Handler is the server's HTTP handler, without the socket: routes, JSON
// errors, body caps and the peer check (which refuses connections that did
// not come through Serve's listener).
func (srv *Server) Handler() http.Handler {
	return srv.middleware(srv.routes())
}

// Ready is closed once Serve's socket accepts connections.
func (srv *Server) Ready() <-chan struct{} { return srv.ready }

// Serve creates the socket at socketPath (mode 0600) and serves until ctx is
// cancelled or Shutdown is called; then it returns nil. A socket another
// live server answers on is an error wrapping errdefs.ErrInUse; a socket
// nobody answers on is replaced.
func (srv *Server) Serve(ctx context.Context, socketPath string) error {
	srv.mu.Lock()
	if srv.started || srv.closed {
		srv.mu.Unlock()
		return fmt.Errorf("api server already started or shut down: %w", errdefs.ErrFailedPrecondition)
	}
	srv.started = true
	srv.mu.Unlock()
	defer close(srv.done)

	lock, err := lockSocket(socketPath)
	if err != nil {
		return err
	}
	defer lock.release()
	if err := checkStale(socketPath); err != nil {
		return err
	}
	l, ours, err := listenPrivate(socketPath)
	if err != nil {
		return err
	}
	defer removeIfOurs(socketPath, ours)

	// Handlers run under baseCtx: cancelling it aborts in-flight store
	// calls when the grace period of a shutdown runs out.
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	// Serve returns only once every handler has returned, also those the
	// end of the grace cancelled: a cancelled pull still releases its lease
	// on the way out, and the caller closes the store after Serve.
	var handlers sync.WaitGroup
	defer handlers.Wait()
	h := srv.Handler()
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			handlers.Add(1)
			srv.inFlight.Add(1)
			defer func() {
				srv.inFlight.Add(-1)
				handlers.Done()
			}()
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: srv.opts.ReadHeaderTimeout,
		IdleTimeout:       srv.opts.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		// No ReadTimeout or WriteTimeout: ingests, exports and pulls
		// stream for as long as they need; the request context bounds them.
		BaseContext: func(net.Listener) context.Context { return baseCtx },
		ConnContext: connContext,
		ErrorLog:    slog.NewLogLogger(srv.log.Handler(), slog.LevelWarn),
	}
	if srv.opts.OnDrain != nil {
		// Shutdown runs this once its listener is closed: what is counted
		// now is exactly what the shutdown waits for.
		hs.RegisterOnShutdown(func() {
			if n := srv.inFlight.Load(); n > 0 {
				srv.opts.OnDrain(int(n))
			}
		})
	}
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		l.Close()
		return nil
	}
	srv.hs, srv.abort = hs, cancelBase
	srv.mu.Unlock()

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	close(srv.ready)
	srv.log.Info("api listening", "socket", socketPath)

	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			<-srv.shutdown // Shutdown is draining; wait for it
			return nil
		}
		return fmt.Errorf("api socket %s: %w", socketPath, err)
	case <-srv.shutdown:
		<-errc
		return nil
	case <-ctx.Done():
		graceCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), srv.opts.ShutdownGrace)
		defer cancel()
		err := srv.drain(graceCtx, hs, cancelBase)
		<-errc
		return err
	}
}

// Shutdown stops accepting connections, lets in-flight requests finish
// until ctx is done, then aborts the rest; it returns once Serve has removed
// its socket.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return nil
	}
	srv.closed = true
	hs, abort, started := srv.hs, srv.abort, srv.started
	srv.mu.Unlock()
	var err error
	if hs != nil {
		err = srv.drain(ctx, hs, abort)
	}
	close(srv.shutdown)
	if started {
		select {
		case <-srv.done:
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
		}
	}
	return err
}

// drain shuts hs down gracefully within ctx and forcefully after it.
func (srv *Server) drain(ctx context.Context, hs *http.Server, cancelBase func()) error {
	err := hs.Shutdown(ctx)
	if err != nil {
		cancelBase()
		hs.Close()
		srv.log.Warn("api shutdown: aborted requests still running", "err", err)
	}
	return err
}
