package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/casfs/casfs/errdefs"
)

// Read deadlines. A registry that sends a byte a second never trips an
// idle timeout, so a response body must instead keep making progress:
// ProgressBytes within every ProgressTimeout spent waiting in Read. A
// transfer that falls behind fails (a blob download then resumes per the
// retry policy, counting a try that fell behind as one without progress).
// Manifests, which are small, also have a total deadline from request to
// last byte.
const (
	defaultProgressTimeout = 30 * time.Second
	defaultProgressBytes   = 64 << 10
	defaultManifestTimeout = 60 * time.Second
)

// ReadDeadlines bound how slowly a registry may answer. Zero fields mean
// "not set": hosts.toml, then the defaults fill them.
type ReadDeadlines struct {
	// ProgressBytes must arrive within every ProgressTimeout that a body
	// read waits; default 64 KiB in 30 s.
	ProgressTimeout time.Duration `json:"progressTimeout,omitempty"`
	ProgressBytes   int64         `json:"progressBytes,omitempty"`
	// ManifestTimeout bounds resolving a reference or fetching one
	// manifest, from request to last byte; default 60 s.
	ManifestTimeout time.Duration `json:"manifestTimeout,omitempty"`
}

// Or fills d's unset fields from o.
func (d ReadDeadlines) Or(o ReadDeadlines) ReadDeadlines {
	if d.ProgressTimeout <= 0 {
		d.ProgressTimeout = o.ProgressTimeout
	}
	if d.ProgressBytes <= 0 {
		d.ProgressBytes = o.ProgressBytes
	}
	if d.ManifestTimeout <= 0 {
		d.ManifestTimeout = o.ManifestTimeout
	}
	return d
}

func (d ReadDeadlines) withDefaults() ReadDeadlines {
	return d.Or(ReadDeadlines{ProgressTimeout: defaultProgressTimeout, ProgressBytes: defaultProgressBytes, ManifestTimeout: defaultManifestTimeout})
}

// slowReadError is the cause of a body cancelled for falling behind.
type slowReadError struct{ d ReadDeadlines }

func (e *slowReadError) Error() string {
	return fmt.Sprintf("registry sent less than %d KiB in %v (progress deadline)", e.d.ProgressBytes>>10, e.d.ProgressTimeout)
}

func (e *slowReadError) Unwrap() error { return errdefs.ErrUnavailable }

func isSlowRead(err error) bool {
	var e *slowReadError
	return errors.As(err, &e)
}

// withManifestDeadline bounds ctx by the manifest deadline.
func withManifestDeadline(ctx context.Context, d ReadDeadlines) (context.Context, context.CancelFunc) {
	t := d.withDefaults().ManifestTimeout
	return context.WithTimeoutCause(ctx, t, fmt.Errorf("registry did not deliver the manifest within %v (manifest deadline): %w", t, errdefs.ErrUnavailable))
}

// manifestDeadlineErr returns the deadline's cause when it is what ended
// ctx, so that the error says which deadline passed.
func manifestDeadlineErr(ctx context.Context, err error) error {
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			return fmt.Errorf("%w (%v)", cause, err)
		}
	}
	return err
}

// progressTransport gives every response body the progress deadline.
type progressTransport struct {
	base http.RoundTripper
	d    ReadDeadlines
}

func (t *progressTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel(nil)
		return nil, err
	}
	b := &progressBody{rc: resp.Body, ctx: ctx, cancel: cancel, d: t.d}
	b.timer = time.AfterFunc(t.d.ProgressTimeout, func() { cancel(&slowReadError{t.d}) })
	b.timer.Stop()
	resp.Body = b
	return resp, nil
}

// progressBody counts only the time spent waiting in Read, so that a
// consumer that stops reading for a while (backpressure) is not taken for
// a slow registry.
type progressBody struct {
	rc     io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	d      ReadDeadlines
	timer  *time.Timer

	mu     sync.Mutex
	waited time.Duration // in Read since the last ProgressBytes arrived
	got    int64         // bytes since then
}

func (b *progressBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	b.timer.Reset(b.d.ProgressTimeout - b.waited)
	b.mu.Unlock()
	start := time.Now()
	n, err := b.rc.Read(p)
	b.mu.Lock()
	b.timer.Stop()
	b.waited += time.Since(start)
	b.got += int64(n)
	if b.got >= b.d.ProgressBytes {
		b.got, b.waited = 0, 0
	}
	b.mu.Unlock()
	if err != nil && err != io.EOF {
		if cause := context.Cause(b.ctx); isSlowRead(cause) {
			return n, cause
		}
	}
	return n, err
}

func (b *progressBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// deadlines reads a hosts.toml entry's read deadlines.
func (cfg hostConfig) deadlines() (ReadDeadlines, error) {
	var d ReadDeadlines
	for _, f := range []struct {
		key, val string
		to       *time.Duration
	}{{"progress_timeout", cfg.ProgressTimeout, &d.ProgressTimeout}, {"manifest_timeout", cfg.ManifestTimeout, &d.ManifestTimeout}} {
		if f.val == "" {
			continue
		}
		v, err := time.ParseDuration(f.val)
		if err != nil || v <= 0 {
			return d, fmt.Errorf("%s %q: want a positive duration such as 30s: %w", f.key, f.val, errdefs.ErrInvalidArgument)
		}
		*f.to = v
	}
	if cfg.ProgressBytes < 0 {
		return d, fmt.Errorf("progress_bytes %d: want a positive byte count: %w", cfg.ProgressBytes, errdefs.ErrInvalidArgument)
	}
	d.ProgressBytes = cfg.ProgressBytes
	return d, nil
}
