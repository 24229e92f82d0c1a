package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/casfs/casfs/errdefs"
)

// handlerFunc is a route's handler. A returned error is written as the JSON
// error response, so a handler returns one only before it has written
// anything; streaming handlers report later failures in-band.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// routes builds the mux from the table (op.go). Patterns are registered without methods and each
// dispatches on the method itself: that keeps 404 and 405 answers JSON, and
// lets a fixed path (/v1/content/verify) sit next to a wildcard one
// (/v1/content/{digest}) without the two conflicting.
func (srv *Server) routes() http.Handler {
	byPattern := map[string]map[string]handlerFunc{}
	var order []string
	for _, rt := range table {
		if byPattern[rt.pattern] == nil {
			byPattern[rt.pattern] = map[string]handlerFunc{}
			order = append(order, rt.pattern)
		}
		byPattern[rt.pattern][rt.method] = func(w http.ResponseWriter, r *http.Request) error { return rt.serve(srv, w, r) }
	}
	mux := http.NewServeMux()
	for _, p := range order {
		methods := byPattern[p]
		mux.Handle(p, srv.dispatch(methods))
	}
	if srv.opts.Debug != nil {
		mux.Handle("/debug/", srv.opts.Debug)
	}
	mux.Handle("/", srv.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return withStatus(http.StatusNotFound,
			fmt.Errorf("no route %s %s (see the api package documentation): %w", r.Method, r.URL.Path, errdefs.ErrNotImplemented))
	}))
	return mux
}

func (srv *Server) dispatch(methods map[string]handlerFunc) http.Handler {
	allowed := make([]string, 0, len(methods))
	wrapped := map[string]http.Handler{}
	for m, h := range methods {
		allowed = append(allowed, m)
		wrapped[m] = srv.wrap(h)
	}
	slices.Sort(allowed)
	allow := strings.Join(allowed, ", ")
	notAllowed := srv.wrap(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Allow", allow)
		return withStatus(http.StatusMethodNotAllowed,
			fmt.Errorf("method %s is not allowed on %s (allowed: %s): %w", r.Method, r.URL.Path, allow, errdefs.ErrInvalidArgument))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, ok := wrapped[r.Method]; ok {
			h.ServeHTTP(w, r)
			return
		}
		notAllowed.ServeHTTP(w, r)
	})
}

// wrap turns a handler's returned error into the JSON error response.
func (srv *Server) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			srv.writeError(w, r, err)
		}
	})
}

// middleware refuses foreign peers and turns a panic into a 500 instead of
// a dropped connection.
func (srv *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				srv.log.Error("api handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
				srv.writeError(w, r, fmt.Errorf("%s %s: internal error in the casfs daemon (see its log)", r.Method, r.URL.Path))
			}
		}()
		p, ok := r.Context().Value(peerKey{}).(peer)
		switch {
		case !ok:
			srv.writeError(w, r, withStatus(http.StatusForbidden, fmt.Errorf("casfs api: connection did not come through the api socket: %w", errdefs.ErrUnauthorized)))
			return
		case p.err != nil:
			srv.writeError(w, r, withStatus(http.StatusForbidden, fmt.Errorf("casfs api: cannot identify the connecting process: %v: %w", p.err, errdefs.ErrUnauthorized)))
			return
		case !srv.allowPeer(p.uid):
			srv.log.Warn("api refused a peer", "uid", p.uid, "pid", p.pid)
			srv.writeError(w, r, withStatus(http.StatusForbidden, fmt.Errorf("casfs api: uid %d may not use this daemon (only root and its owner may): %w", p.uid, errdefs.ErrUnauthorized)))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// statusError overrides the status the error's class would get.
type statusError struct {
	status int
	err    error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func withStatus(status int, err error) error { return &statusError{status: status, err: err} }

func (srv *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	body, status := errorBody(err)
	var se *statusError
	if errors.As(err, &se) {
		status = se.status
	}
	if body.Kind == kindInternal {
		srv.log.Warn("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		srv.log.Debug("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client left
}

// decodeJSON reads a capped JSON body into v. An empty body leaves v at its
// zero value, so that `curl -X POST .../verify` means "verify everything".
func (srv *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, srv.opts.MaxJSONBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields() // an option this daemon does not know must not be silently ignored
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err == nil {
		// One JSON value per body: trailing bytes are a malformed request.
		if err = dec.Decode(new(json.RawMessage)); errors.Is(err, io.EOF) {
			return nil
		}
		if err == nil {
			err = errors.New("more than one JSON value")
		}
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return withStatus(http.StatusRequestEntityTooLarge,
			fmt.Errorf("request body is larger than %d bytes: %w", tooBig.Limit, errdefs.ErrInvalidArgument))
	}
	if r.Context().Err() != nil {
		return r.Context().Err()
	}
	return fmt.Errorf("malformed JSON request body: %v: %w", err, errdefs.ErrInvalidArgument)
}

// requireQuery returns a query parameter that must be present (it may be
// empty: the store decides what an empty value means).
func requireQuery(r *http.Request, name string) (string, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return "", fmt.Errorf("missing query parameter %q: %w", name, errdefs.ErrInvalidArgument)
	}
	return q.Get(name), nil
}
