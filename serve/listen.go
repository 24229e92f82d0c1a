package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/casfs/casfs/errdefs"
)

// DefaultAddr is where casfs serve listens unless told otherwise.
const DefaultAddr = "127.0.0.1:5050"

// ListenConfig is where and how the server listens.
type ListenConfig struct {
	Addr string
	// TLSCert and TLSKey are PEM files; both or neither.
	TLSCert, TLSKey string
	// ClientCA, when set, makes clients present a certificate it signed.
	ClientCA string
	// Insecure allows plain HTTP on an address other than loopback.
	Insecure bool
}

// Check rejects a configuration that would serve the store in the clear
// beyond this machine, or half a TLS setup.
func (c ListenConfig) Check() error {
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("listen address %q: want HOST:PORT: %w", c.Addr, errdefs.ErrInvalidArgument)
	}
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return fmt.Errorf("--tls-cert and --tls-key go together: %w", errdefs.ErrInvalidArgument)
	case c.ClientCA != "" && c.TLSCert == "":
		return fmt.Errorf("--tls-client-ca needs --tls-cert and --tls-key: %w", errdefs.ErrInvalidArgument)
	case c.TLSCert == "" && !c.Insecure && !isLoopback(host):
		return fmt.Errorf("listen address %s is not loopback: serving it needs --tls-cert and --tls-key, or --insecure: %w", c.Addr, errdefs.ErrInvalidArgument)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Listen opens the listening socket, with TLS when configured.
func Listen(c ListenConfig) (net.Listener, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	var tc *tls.Config
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load tls certificate %s: %w", c.TLSCert, err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if c.ClientCA != "" {
			pem, err := os.ReadFile(c.ClientCA)
			if err != nil {
				return nil, fmt.Errorf("read client ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("client ca %s holds no PEM certificate: %w", c.ClientCA, errdefs.ErrInvalidArgument)
			}
			tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", c.Addr, err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	return ln, nil
}

// Serve answers requests on ln until ctx ends, then lets transfers in
// flight finish for a few seconds before closing them.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          nil,
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
