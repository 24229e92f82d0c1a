package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/casfs/casfs/errdefs"
)

// classify wraps a registry or network error with the casfs sentinel that
// says what kind of failure it is, keeping the original text (a TLS
// failure keeps its reason: unknown authority, wrong host name).
func classify(err error) error {
	if err == nil {
		return nil
	}
	for _, s := range []error{errdefs.ErrNotFound, errdefs.ErrUnauthorized, errdefs.ErrUnavailable,
		errdefs.ErrInvalidArgument, errdefs.ErrDigestMismatch, errdefs.ErrNotImplemented, errdefs.ErrLocked} {
		if errors.Is(err, s) {
			return err
		}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		switch {
		case er.StatusCode == http.StatusUnauthorized, er.StatusCode == http.StatusForbidden:
			return fmt.Errorf("%w: %w", errdefs.ErrUnauthorized, err)
		case er.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
		case er.StatusCode == http.StatusTooManyRequests, er.StatusCode >= 500:
			return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	}
	if errors.Is(err, auth.ErrBasicCredentialNotFound) {
		return fmt.Errorf("%w: %w", errdefs.ErrUnauthorized, err)
	}
	var (
		unknownCA   x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidCert x509.CertificateInvalidError
		verifyErr   *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalidCert) || errors.As(err, &verifyErr) {
		return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	if msg := err.Error(); strings.Contains(msg, "tls: certificate required") || strings.Contains(msg, "tls: bad certificate") {
		return fmt.Errorf("%w: registry wants a TLS client certificate it accepts (hosts.toml client): %w", errdefs.ErrUnauthorized, err)
	}
	var netErr net.Error
	var opErr *net.OpError
	if errors.As(err, &netErr) || errors.As(err, &opErr) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, context.DeadlineExceeded) || isTransient(err) {
		return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	return err
}

// isFinal reports errors that another endpoint would not cure because the
// request itself is wrong.
func isFinal(err error) bool {
	return errors.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, errdefs.ErrNotImplemented) ||
		errors.Is(err, context.Canceled)
}
