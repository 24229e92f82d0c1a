// Package errdefs holds the sentinel errors that every casfs package wraps
// and every caller tests with errors.Is. Keeping them in one leaf package
// lets the command line map a failure to an exit code without knowing which
// part produced it.
package errdefs

import "errors"

var (
	// ErrNotFound: the named blob, image, snapshot, lease or ingest does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the thing being created already exists (for example committed content).
	ErrExists = errors.New("already exists")
	// ErrLocked: another writer holds the ingest ref or the store.
	ErrLocked = errors.New("locked")
	// ErrInvalidArgument: the caller's input is malformed (digest, reference, option).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrFailedPrecondition: the operation cannot run in the current state
	// (size or digest mismatch at commit, blob still referenced, ...).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrDigestMismatch: bytes do not hash to the digest they claim.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUnavailable: a remote (registry, daemon) could not be reached in time.
	ErrUnavailable = errors.New("unavailable")
	// ErrInUse: the store is held by another casfs process.
	ErrInUse = errors.New("store in use")
	// ErrNotImplemented: the request names something casfs does not support.
	ErrNotImplemented = errors.New("not implemented")
	// ErrUnauthorized: the registry refused our credentials.
	ErrUnauthorized = errors.New("unauthorized")
)

// IsUsage reports whether err is the caller's fault (exit status 2).
func IsUsage(err error) bool { return errors.Is(err, ErrInvalidArgument) }
