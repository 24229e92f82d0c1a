package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
)

// maxStalledAttempts bounds retries of one blob on one endpoint that make
// no progress; an attempt that moved bytes does not count against it.
const maxStalledAttempts = 5

// source is where content of one repository can be fetched from.
type source struct {
	Source
	eps []hostEndpoint
}

func (f *op) source(host, repo string) (source, error) {
	eps, err := f.resolver.endpointsWith(host, capPull)
	if err != nil {
		return source{}, err
	}
	return source{Source: Source{Host: host, Repo: repo}, eps: eps}, nil
}

// ingestRef is stable per digest so that a later pull finds and resumes
// the partial download of an earlier one.
func ingestRef(d digest.Digest) string { return "fetch-" + d.String() }

// fetchBlob makes desc present in the store, one download per digest at a
// time however many operations of the store ask: the first one downloads
// (with its endpoints, progress and tee), the others wait for its outcome.
// A waiter whose leader failed while the waiter itself is still wanted
// tries again, leading if no one else does, so that one operation's
// cancellation or credentials never fail another. existed reports that the
// blob was there before this operation asked.
func (f *op) fetchBlob(ctx context.Context, src source, desc ocispec.Descriptor) (bool, error) {
	if w := teeFrom(ctx); w != nil {
		// Ended here unless the download below fed and ended it.
		ot := &onceTee{w: w}
		ctx = WithTee(ctx, ot)
		defer func() {
			why := fmt.Errorf("blob %s was not downloaded by this fetch", desc.Digest)
			if ctx.Err() != nil {
				why = context.Cause(ctx)
			}
			_ = ot.CloseWithError(fmt.Errorf("%w: %w", why, errTeeStopped))
		}()
	}
	if err := desc.Digest.Validate(); err != nil || desc.Size < 0 {
		return false, fmt.Errorf("blob descriptor %q size %d: %w", desc.Digest, desc.Size, errdefs.ErrInvalidArgument)
	}
	// Into the caller's lease before looking for it: see Records.Lease.
	if err := f.rec.Lease(ctx, []digest.Digest{desc.Digest}); err != nil {
		return false, err
	}
	prog := f.progress()
	prog.Start(desc)
	for {
		led := false // the function below runs in this goroutine when it leads
		v, err, _ := f.flight.Do(desc.Digest.String(), func() (any, error) {
			led = true
			return f.fetchBlobOnce(ctx, src, desc)
		})
		if led {
			if err != nil {
				return false, err
			}
			return v.(bool), nil
		}
		if err == nil {
			// Another operation's download brought it: nothing moved for this one.
			prog.Done(desc, nil, true)
			return true, nil
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("blob %s: %w", desc.Digest, ctx.Err())
			prog.Done(desc, err, false)
			return false, err
		}
		slog.Debug("shared blob download failed, trying again", "digest", desc.Digest, "err", err)
	}
}

// fetchBlobOnce is one download of desc, reported to the progress that
// fetchBlob started.
func (f *op) fetchBlobOnce(ctx context.Context, src source, desc ocispec.Descriptor) (existed bool, err error) {
	prog := f.progress()
	if ok, err := f.present(ctx, desc); err != nil || ok {
		prog.Done(desc, err, ok)
		return ok, err
	}
	defer func() { prog.Done(desc, err, existed) }()
	w, done, err := f.lockIngest(ctx, desc)
	if err != nil || done {
		return done, err
	}
	tee := startTee(ctx, desc)
	defer func() { tee.finish(err) }()
	committed := false
	defer func() {
		if committed {
			return
		}
		st, serr := w.Status()
		w.Close()
		// Keep a partial download for the next try; drop what proved wrong.
		if serr == nil && st.Offset == 0 {
			_ = f.store.Abort(context.WithoutCancel(ctx), ingestRef(desc.Digest))
		}
	}()
	var errs []error
	ended := false // a failed commit ended w
	for _, ep := range src.eps {
		if ended {
			var done bool
			if w, done, err = f.lockIngest(ctx, desc); err != nil || done {
				committed = true // nothing of ours left to close
				return done, err
			}
			ended = false
		}
		err := f.fetchFromEndpoint(ctx, w, ep, src.Repo, desc, tee)
		if err == nil || errors.Is(err, errdefs.ErrExists) {
			committed = true
			return errors.Is(err, errdefs.ErrExists), nil
		}
		if ctx.Err() != nil {
			return false, fmt.Errorf("blob %s: %w", desc.Digest, ctx.Err())
		}
		slog.Debug("blob fetch failed", "digest", desc.Digest, "endpoint", ep.String(), "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
		// A commit that found the wrong bytes ended the writer (and
		// dropped its ingest): the next endpoint gets a fresh one.
		ended = errors.As(err, new(writerEnded))
	}
	return false, fmt.Errorf("blob %s: %w", desc.Digest, joinErrors(errs))
}

// writerEnded marks an error after which the ingest's writer is closed.
type writerEnded struct{ error }

func (e writerEnded) Unwrap() error { return e.error }

// lockIngest opens the ingest of desc. While another pull (of this process
// or another) downloads the same blob, it waits for that one to finish
// rather than failing: done then reports that the blob is in the store.
func (f *op) lockIngest(ctx context.Context, desc ocispec.Descriptor) (w cas.Writer, done bool, err error) {
	wait := 50 * time.Millisecond
	for {
		w, err := f.store.Writer(ctx, ingestRef(desc.Digest), cas.WriterOpts{Expected: desc.Digest, Total: desc.Size})
		if err == nil {
			return w, false, nil
		}
		if errors.Is(err, errdefs.ErrExists) {
			return nil, true, nil // stored meanwhile
		}
		if !errors.Is(err, errdefs.ErrLocked) {
			return nil, false, fmt.Errorf("blob %s: %w", desc.Digest, err)
		}
		slog.Debug("blob is being fetched by another pull, waiting", "digest", desc.Digest)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, false, fmt.Errorf("blob %s: waiting for another pull of it: %w", desc.Digest, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
		if ok, err := f.present(ctx, desc); err != nil || ok {
			return nil, ok, err
		}
	}
}

// present reports whether the store has desc already, checking its size.
func (f *op) present(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	info, err := f.store.Info(ctx, desc.Digest)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if info.Size != desc.Size {
		return false, fmt.Errorf("blob %s is %d bytes in the store but the descriptor says %d: %w", desc.Digest, info.Size, desc.Size, errdefs.ErrDigestMismatch)
	}
	return true, nil
}

// fetchFromEndpoint downloads into w, resuming at w's offset after
// transient failures, and commits with the digest and size checked.
func (f *op) fetchFromEndpoint(ctx context.Context, w cas.Writer, ep hostEndpoint, repo string, desc ocispec.Descriptor, tee *teeCopy) error {
	stalled := 0
	for {
		before := offsetOf(w)
		err := f.download(ctx, w, ep, repo, desc, tee)
		if err == nil {
			err = w.Commit(ctx, desc.Size, desc.Digest)
			if err == nil || errors.Is(err, errdefs.ErrExists) {
				return err
			}
			if errors.Is(err, errdefs.ErrFailedPrecondition) {
				// Unverified bytes never stay: the failed commit ended the
				// writer; drop its ingest so that the next try starts over.
				_ = f.store.Abort(context.WithoutCancel(ctx), ingestRef(desc.Digest))
				return writerEnded{fmt.Errorf("registry served content that does not match %s: %w", desc.Digest, errdefs.ErrDigestMismatch)}
			}
			return err
		}
		err = classify(err)
		// Request-level retries (5xx, 429, resets before the headers) were
		// done by the transport; here only a broken body is resumed.
		if !isTransient(err) || ctx.Err() != nil {
			return err
		}
		// A try that fell behind the progress deadline may have moved a
		// little; only a real step forward makes the next try worth it.
		if offsetOf(w) >= before+ep.Deadlines.withDefaults().ProgressBytes {
			stalled = 0
		} else if stalled++; stalled >= maxStalledAttempts {
			return err
		}
		wait := min(250*time.Millisecond<<stalled, 5*time.Second)
		slog.Debug("blob download interrupted, resuming", "digest", desc.Digest, "offset", offsetOf(w), "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func offsetOf(w cas.Writer) int64 {
	st, err := w.Status()
	if err != nil {
		return 0
	}
	return st.Offset
}

// download sends one GET, with Range when w holds a partial download, and
// copies the body into w. It never writes past desc.Size.
func (f *op) download(ctx context.Context, w cas.Writer, ep hostEndpoint, repo string, desc ocispec.Descriptor, tee *teeCopy) error {
	off := offsetOf(w)
	if off > desc.Size {
		if err := w.Truncate(0); err != nil {
			return err
		}
		off = 0
	}
	if off == desc.Size && desc.Size > 0 {
		return nil
	}
	body, start, err := f.getBlob(ctx, ep, repo, desc.Digest, off, -1)
	if errors.Is(err, errWrongRange) {
		// Not the part we asked for: start over from zero next time.
		if terr := w.Truncate(0); terr != nil {
			return terr
		}
	}
	if err != nil {
		return err
	}
	defer body.Close()
	if start != off {
		slog.Debug("registry ignored Range, starting blob over", "digest", desc.Digest, "endpoint", ep.String())
		if err := w.Truncate(0); err != nil {
			return err
		}
		off = 0
	}
	want := desc.Size - off
	if body.ContentLength >= 0 && body.ContentLength != want {
		return fmt.Errorf("registry announced %d bytes for %s where %d were expected: %w", body.ContentLength, desc.Digest, want, errdefs.ErrDigestMismatch)
	}
	tee.at(off)
	pw := &progressWriter{w: w, desc: desc, done: off, prog: f.progress(), tee: tee}
	n, err := io.Copy(pw, io.LimitReader(body, want+1))
	if n > want {
		_ = w.Truncate(0)
		return fmt.Errorf("registry sent more than the %d bytes of %s: %w", desc.Size, desc.Digest, errdefs.ErrDigestMismatch)
	}
	if err != nil {
		return err
	}
	if n < want {
		return fmt.Errorf("registry sent %d of %d bytes of %s: %w", off+n, desc.Size, desc.Digest, io.ErrUnexpectedEOF)
	}
	return nil
}

// errWrongRange marks a 206 answer for another range than the one asked.
var errWrongRange = errors.New("registry answered another range")

// blobBody is the body of a blob GET and the length the registry announced
// (-1: unknown).
type blobBody struct {
	io.ReadCloser
	ContentLength int64
}

// getBlob sends one GET for dgst to ep, asking for bytes off to end
// (inclusive; end < 0: to the blob's end, and no Range at all from 0). It
// returns the body and the offset the body starts at: off when the
// registry answered the range, 0 when it ignored Range and sent the whole
// blob. A partial answer for another range is an error (errWrongRange).
func (f *op) getBlob(ctx context.Context, ep hostEndpoint, repo string, dgst digest.Digest, off, end int64) (*blobBody, int64, error) {
	ctx = auth.AppendRepositoryScope(ctx, registry.Reference{Registry: ep.URL.Host, Repository: repo}, auth.ActionPull)
	u := ep.URL.String() + "/v2/" + repo + "/blobs/" + dgst.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	switch {
	case end >= 0:
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(end, 10))
	case off > 0:
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	resp, err := f.resolver.AuthClient(ep).Do(req)
	if err != nil {
		return nil, 0, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return &blobBody{resp.Body, resp.ContentLength}, 0, nil
	case http.StatusPartialContent:
		start, ok := contentRangeStart(resp.Header.Get("Content-Range"))
		if req.Header.Get("Range") != "" && ok && start == off {
			return &blobBody{resp.Body, resp.ContentLength}, off, nil
		}
		resp.Body.Close()
		return nil, 0, fmt.Errorf("GET %s: partial content %q does not start at %d: %w: %w", u, resp.Header.Get("Content-Range"), off, errWrongRange, io.ErrUnexpectedEOF)
	default:
		defer resp.Body.Close()
		return nil, 0, statusError(resp)
	}
}

// contentRangeStart reads the first byte position of "bytes a-b/c".
func contentRangeStart(v string) (int64, bool) {
	v, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, false
	}
	a, _, ok := strings.Cut(v, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(a), 10, 64)
	return n, err == nil
}

// statusError turns a non-success response into a classified error.
func statusError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(body))
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	err := fmt.Errorf("%s %s: %s %s", resp.Request.Method, resp.Request.URL.Redacted(), resp.Status, msg)
	switch {
	case resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: %w", errdefs.ErrUnauthorized, err)
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	return err
}

type progressWriter struct {
	w    io.Writer
	desc ocispec.Descriptor
	done int64
	prog Progress
	tee  *teeCopy
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.passed(b[:n])
	return n, err
}

// passed shows bytes that went through to the tee and the progress.
func (p *progressWriter) passed(b []byte) {
	p.tee.write(b)
	p.done += int64(len(b))
	p.prog.Update(p.desc, p.done)
}

// ReadFrom lets a writer that reads for itself (the store's ingest reads
// straight into its 1 MiB chunks) take the body: one socket read per
// chunk's worth of what has arrived instead of one per 32 KiB, and no copy
// through io.Copy's buffer. Each read's bytes go to the tee and the
// progress before the next read.
func (p *progressWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := p.w.(io.ReaderFrom)
	if !ok {
		return io.Copy(onlyWriter{p}, r)
	}
	return rf.ReadFrom(passingReader{r, p})
}

// onlyWriter hides ReadFrom, so that io.Copy falls back to Write.
type onlyWriter struct{ io.Writer }

type passingReader struct {
	r io.Reader
	p *progressWriter
}

func (pr passingReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.passed(b[:n])
	return n, err
}
