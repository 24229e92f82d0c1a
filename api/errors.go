package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/casfs/casfs/errdefs"
)

// A kind names one errdefs sentinel on the wire. The table is ordered from
// the most specific class to the least, so that an error wrapping several
// sentinels (a digest mismatch that is also a failed precondition) is
// reported by its most telling one; every class it matches still travels in
// Kinds so that errors.Is answers the same on both sides of the socket.
type kind struct {
	name     string
	sentinel error
	status   int
}

const kindInternal = "internal"

var kinds = []kind{
	{"digest_mismatch", errdefs.ErrDigestMismatch, http.StatusUnprocessableEntity},
	{"not_found", errdefs.ErrNotFound, http.StatusNotFound},
	{"exists", errdefs.ErrExists, http.StatusConflict},
	{"locked", errdefs.ErrLocked, http.StatusLocked},
	{"in_use", errdefs.ErrInUse, http.StatusConflict},
	{"invalid_argument", errdefs.ErrInvalidArgument, http.StatusBadRequest},
	{"failed_precondition", errdefs.ErrFailedPrecondition, http.StatusPreconditionFailed},
	{"unauthorized", errdefs.ErrUnauthorized, http.StatusUnauthorized},
	{"not_implemented", errdefs.ErrNotImplemented, http.StatusNotImplemented},
	{"unavailable", errdefs.ErrUnavailable, http.StatusServiceUnavailable},
}

// ErrorBody is the JSON body of every failed request, the last line of a
// failed progress stream and the Casfs-Error trailer of a stream that broke
// after its first byte. Error is the store's message, verbatim.
type ErrorBody struct {
	Error string `json:"error"`
	// Kind is the primary class: one of not_found, exists, locked,
	// invalid_argument, failed_precondition, digest_mismatch, unavailable,
	// in_use, not_implemented, unauthorized, internal.
	Kind string `json:"kind"`
	// Kinds lists every class the error belongs to when there is more than one.
	Kinds []string `json:"kinds,omitempty"`
}

// errorBody classifies err for the wire and picks its HTTP status.
func errorBody(err error) (ErrorBody, int) {
	b := ErrorBody{Error: err.Error(), Kind: kindInternal}
	status := http.StatusInternalServerError
	for _, k := range kinds {
		if !errors.Is(err, k.sentinel) {
			continue
		}
		if b.Kind == kindInternal {
			b.Kind, status = k.name, k.status
		}
		b.Kinds = append(b.Kinds, k.name)
	}
	if len(b.Kinds) < 2 {
		b.Kinds = nil
	}
	if b.Kind == kindInternal && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The caller went away or gave up; 499 is what proxies log for it.
		status = 499
	}
	return b, status
}

// RemoteError is a store error that crossed the socket. Error returns the
// server's message unchanged, so a command prints the same line whether it
// ran embedded or through the daemon, and errors.Is matches the same errdefs
// sentinels the server-side error matched.
type RemoteError struct {
	Message string
	Kind    string
	classes []error
}

func (e *RemoteError) Error() string   { return e.Message }
func (e *RemoteError) Unwrap() []error { return e.classes }

// remoteError rebuilds a store error from its wire form. Kinds this client
// does not know (a newer daemon) are ignored: the message still says it all.
func remoteError(b ErrorBody) *RemoteError {
	e := &RemoteError{Message: b.Error, Kind: b.Kind}
	names := b.Kinds
	if len(names) == 0 {
		names = []string{b.Kind}
	}
	for _, n := range names {
		for _, k := range kinds {
			if k.name == n {
				e.classes = append(e.classes, k.sentinel)
			}
		}
	}
	return e
}
