package serve

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// Options tune a Server; zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// MaxTransfers bounds the blob and manifest bodies sent at once; more
	// requests wait for a slot (default 64).
	MaxTransfers int
	// MinRate is the slowest a client may read a body, in bytes per
	// second, before its connection is cut (default 64 KiB/s); every
	// body also gets a minute of grace.
	MinRate int64
}

// Server answers registry requests from a Store. It is an http.Handler.
type Server struct {
	st    Store
	log   *slog.Logger
	slots chan struct{}
	rate  int64

	// sendfileLocal sends bodies to local peers with sendfile too, as to
	// remote ones: tests reach only loopback, and set it to cover that path.
	sendfileLocal bool
}

// New returns a server of st.
func New(st Store, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxTransfers <= 0 {
		opts.MaxTransfers = 64
	}
	if opts.MinRate <= 0 {
		opts.MinRate = 64 << 10
	}
	return &Server{st: st, log: opts.Logger, slots: make(chan struct{}, opts.MaxTransfers), rate: opts.MinRate}
}

// route is a parsed /v2/ path.
type route struct {
	kind string // base, catalog, manifest, blob, upload, tags, referrers
	name string
	ref  string
}

// parseRoute splits a /v2/ path. A repository name may contain the words
// of the routes, so the route is taken from the end of the path.
func parseRoute(p string) (route, bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	switch {
	case !ok:
		return route{}, false
	case rest == "":
		return route{kind: "base"}, true
	case rest == "_catalog":
		return route{kind: "catalog"}, true
	}
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return route{kind: "tags", name: name}, true
	}
	if i := strings.Index(rest, "/blobs/uploads"); i > 0 {
		return route{kind: "upload", name: rest[:i]}, true
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return route{}, false
	}
	head, ref := rest[:i], rest[i+1:]
	for _, k := range []string{"manifest", "blob", "referrer"} {
		if name, ok := strings.CutSuffix(head, "/"+k+"s"); ok && ref != "" {
			return route{kind: k, name: name, ref: ref}, true
		}
	}
	return route{}, false
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	lw := &loggedWriter{ResponseWriter: w, status: http.StatusOK, copyBodies: !s.sendfileLocal && loopbackPeer(r)}
	defer func() { // also when a broken transfer aborts the response
		s.log.Debug("registry request", "method", r.Method, "uri", r.URL.RequestURI(), "remote", r.RemoteAddr,
			"status", lw.status, "bytes", lw.n, "duration", time.Since(start).Round(time.Microsecond))
	}()
	s.serve(lw, r)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	s.bound(w, 0) // a kept-alive connection must not carry the last body's deadline
	rt, ok := parseRoute(r.URL.Path)
	if !ok {
		writeError(w, r, errNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, r, errUnsupported)
		return
	}
	if rt.kind == "upload" {
		writeError(w, r, errUnsupported)
		return
	}
	if rt.name != "" && !nameRE.MatchString(rt.name) {
		writeError(w, r, errNameInvalid)
		return
	}
	ctx := r.Context()
	var err *regError
	switch rt.kind {
	case "base":
		writeJSON(w, r, "application/json", struct{}{})
	case "catalog":
		err = s.catalog(ctx, w, r)
	case "tags":
		err = s.tags(ctx, w, r, rt.name)
	case "manifest":
		err = s.manifest(ctx, w, r, rt.name, rt.ref)
	case "blob":
		err = s.blob(ctx, w, r, rt.name, rt.ref)
	case "referrer":
		err = s.referrers(ctx, w, r, rt.name, rt.ref)
	}
	if err != nil {
		writeError(w, r, err)
	}
}

// repo finds the repository a request names (names rule in doc.go).
func (s *Server) repo(ctx context.Context, r *http.Request, name string) (*repository, *regError) {
	c, err := s.catalogue(ctx)
	if err != nil {
		return nil, err
	}
	repo := c.lookup(name, r.URL.Query().Get("ns"))
	if repo == nil {
		return nil, errNameUnknown
	}
	return repo, nil
}

func (s *Server) catalogue(ctx context.Context) (catalogue, *regError) {
	imgs, err := s.st.Images(ctx)
	if err != nil {
		return nil, s.internal("list images", err)
	}
	return newCatalogue(imgs), nil
}

// internal logs a store failure and answers 500 without its details.
func (s *Server) internal(what string, err error) *regError {
	s.log.Error("registry: "+what, "err", err)
	return errorf(http.StatusInternalServerError, "UNKNOWN", what+" failed")
}

// list answers tags/list and _catalog: a sorted page with a Link header to
// the next one.
func (s *Server) list(w http.ResponseWriter, r *http.Request, all []string, body func([]string) any) *regError {
	q := r.URL.Query()
	n := -1
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			return errPaginationN
		}
	}
	items, more := page(all, n, q.Get("last"))
	if more && len(items) > 0 {
		next := *r.URL
		nq := next.Query()
		nq.Set("last", items[len(items)-1])
		next.RawQuery = nq.Encode()
		w.Header().Set("Link", "<"+next.RequestURI()+`>; rel="next"`)
	}
	writeJSON(w, r, "application/json", body(items))
	return nil
}

func (s *Server) catalog(ctx context.Context, w http.ResponseWriter, r *http.Request) *regError {
	c, err := s.catalogue(ctx)
	if err != nil {
		return err
	}
	return s.list(w, r, c.names(r.URL.Query().Get("ns")), func(names []string) any {
		return struct {
			Repositories []string `json:"repositories"`
		}{names}
	})
}

func (s *Server) tags(ctx context.Context, w http.ResponseWriter, r *http.Request, name string) *regError {
	repo, err := s.repo(ctx, r, name)
	if err != nil {
		return err
	}
	return s.list(w, r, repo.tagList(), func(tags []string) any {
		return struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}{name, tags}
	})
}

// reachedIn parses ref as a digest and returns what the named
// repository's images reach.
func (s *Server) reachedIn(ctx context.Context, r *http.Request, name, ref string) (digest.Digest, map[digest.Digest]string, *regError) {
	d, err := digest.Parse(ref)
	if err != nil {
		return "", nil, errDigestInvalid
	}
	repo, rerr := s.repo(ctx, r, name)
	if rerr != nil {
		return "", nil, rerr
	}
	reached, rerr := s.reach(ctx, repo)
	return d, reached, rerr
}

// reach returns what the repository's images reach.
func (s *Server) reach(ctx context.Context, repo *repository) (map[digest.Digest]string, *regError) {
	reached, err := s.st.Reach(ctx, repo.roots)
	if err != nil {
		return nil, s.internal("walk "+repo.host+"/"+repo.path, err)
	}
	return reached, nil
}

func (s *Server) manifest(ctx context.Context, w http.ResponseWriter, r *http.Request, name, ref string) *regError {
	repo, rerr := s.repo(ctx, r, name)
	if rerr != nil {
		return rerr
	}
	var mediaType string
	d, err := digest.Parse(ref)
	if err != nil {
		if strings.Contains(ref, ":") {
			return errDigestInvalid
		}
		desc, ok := repo.tags[ref]
		if !ok {
			return errManifestUnknown
		}
		d, mediaType = desc.Digest, desc.MediaType
	} else {
		reached, rerr := s.reach(ctx, repo)
		if rerr != nil {
			return rerr
		}
		mt, ok := reached[d]
		if !ok {
			return errManifestUnknown
		}
		mediaType = mt
	}
	b, err := s.st.ReadManifest(ctx, d)
	if errors.Is(err, errdefs.ErrNotFound) {
		return errManifestUnknown
	} else if err != nil {
		return s.internal("read manifest "+d.String(), err)
	}
	if mediaType == "" {
		mediaType = oci.Sniff(b)
	}
	if !isManifestType(mediaType) { // reached, but not as a manifest
		return errManifestUnknown
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("ETag", `"`+d.String()+`"`)
	writeBytes(w, r, mediaType, b)
	return nil
}

func (s *Server) blob(ctx context.Context, w http.ResponseWriter, r *http.Request, name, ref string) *regError {
	d, reached, rerr := s.reachedIn(ctx, r, name, ref)
	if rerr != nil {
		return rerr
	}
	if _, ok := reached[d]; !ok {
		return errBlobUnknown
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", d.String())
	h.Set("ETag", `"`+d.String()+`"`)
	if r.Method == http.MethodHead && r.Header.Get("Range") == "" {
		return s.blobHead(ctx, w, d)
	}
	if !s.acquire(ctx) {
		return errTooMany // the client went away while waiting
	}
	defer s.release()
	if r.Method == http.MethodGet && r.Header.Get("Range") == "" {
		if done, rerr := s.pullThrough(ctx, w, d); done || rerr != nil {
			return rerr
		}
	}
	f, err := s.st.OpenBlob(ctx, d)
	if errors.Is(err, errdefs.ErrNotFound) {
		return errBlobUnknown
	} else if err != nil {
		return s.internal("open blob "+d.String(), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return s.internal("stat blob "+d.String(), err)
	}
	s.bound(w, fi.Size())
	// ServeContent answers HEAD, Range (206) and bad ranges (416), and
	// copies from the *os.File: with sendfile to a remote peer, in large
	// writes to a local one (loggedWriter.ReadFrom).
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}

// blobHead answers a HEAD from the blob's record, so a blob that is not
// local is not fetched to tell its size. Its headers are those of a GET.
func (s *Server) blobHead(ctx context.Context, w http.ResponseWriter, d digest.Digest) *regError {
	size, err := s.st.BlobSize(ctx, d)
	if errors.Is(err, errdefs.ErrNotFound) {
		return errBlobUnknown
	} else if err != nil {
		return s.internal("look up blob "+d.String(), err)
	}
	h := w.Header()
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	return nil
}

// pullThrough sends a blob that is not local while the store fetches it
// from upstream; done is false when the blob is local. A download that
// fails midway aborts the response, so the client sees a short body
// rather than wrong bytes.
func (s *Server) pullThrough(ctx context.Context, w http.ResponseWriter, d digest.Digest) (done bool, rerr *regError) {
	rc, size, err := s.st.StreamBlob(ctx, d)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return true, errBlobUnknown
	case err != nil:
		return true, s.internal("fetch blob "+d.String(), err)
	case rc == nil:
		return false, nil
	}
	defer rc.Close()
	s.log.Debug("registry: pulling through from upstream", "digest", d, "size", size)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	s.bound(w, size)
	w.WriteHeader(http.StatusOK)
	// Headers go out now, not with the first bytes: a slow upstream must
	// not trip the client's response-header timeout.
	_ = http.NewResponseController(w).Flush()
	if _, err := io.Copy(w, rc); err != nil {
		s.log.Warn("registry: pull-through stopped", "digest", d, "err", err)
		panic(http.ErrAbortHandler)
	}
	return true, nil
}

// referrers answers the referrers API from the repository's manifests whose
// subject is the digest.
func (s *Server) referrers(ctx context.Context, w http.ResponseWriter, r *http.Request, name, ref string) *regError {
	subject, reached, rerr := s.reachedIn(ctx, r, name, ref)
	if rerr != nil {
		return rerr
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	filter := r.URL.Query().Get("artifactType")
	for d, mt := range reached {
		if mt != ocispec.MediaTypeImageManifest && mt != ocispec.MediaTypeImageIndex {
			continue
		}
		b, err := s.st.ReadManifest(ctx, d)
		if err != nil {
			continue // not local: cannot refer to anything we can show
		}
		if desc, ok := referrer(b, d, mt, subject); ok && (filter == "" || desc.ArtifactType == filter) {
			idx.Manifests = append(idx.Manifests, desc)
		}
	}
	if filter != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	writeJSON(w, r, ocispec.MediaTypeImageIndex, idx)
	return nil
}

func (s *Server) acquire(ctx context.Context) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) release() { <-s.slots }

// bound cuts a client that reads a body of size bytes slower than the
// minimum rate.
func (s *Server) bound(w http.ResponseWriter, size int64) {
	d := time.Minute + time.Duration(size/s.rate)*time.Second
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
}

func writeJSON(w http.ResponseWriter, r *http.Request, mediaType string, v any) {
	b, _ := json.Marshal(v)
	writeBytes(w, r, mediaType, b)
}

func writeBytes(w http.ResponseWriter, r *http.Request, mediaType string, b []byte) {
	h := w.Header()
	h.Set("Content-Type", mediaType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
}

// loggedWriter records the status and size of a response for the log.
type loggedWriter struct {
	http.ResponseWriter
	status     int
	n          int64
	copyBodies bool // the peer is local: copy bodies rather than sendfile them
}

func (l *loggedWriter) WriteHeader(code int) {
	l.status = code
	l.ResponseWriter.WriteHeader(code)
}

func (l *loggedWriter) Write(b []byte) (int, error) {
	n, err := l.ResponseWriter.Write(b)
	l.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (l *loggedWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }

// ReadFrom sends a body. To a remote peer it keeps net/http's sendfile
// path (io.Copy into the response reaches the connection's ReadFrom with
// the *os.File): the kernel sends page-cache pages without copying them.
// To a peer on this machine (copyBodies) it copies in 1 MiB writes: over
// loopback the receiver copies every byte anyway, and skbs that reference
// page-cache pages cost more per byte than they save. Measured here on a
// 2-core VM with a 1 GiB blob, warm: sendfile 1.35-1.84 GiB/s for
// 0.53-0.60 s CPU/GiB, 1 MiB writes 2.3-2.8 GiB/s for 0.35 s CPU/GiB
// (docker-registry, which writes through a 4 MiB buffer: 2.0-2.6 GiB/s).
func (l *loggedWriter) ReadFrom(r io.Reader) (int64, error) {
	if !l.copyBodies {
		n, err := io.Copy(l.ResponseWriter, r)
		l.n += n
		return n, err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	// writerOnly hides the response's ReadFrom, which would read 32 KiB
	// at a time.
	n, err := io.CopyBuffer(writerOnly{l.ResponseWriter}, r, *bp)
	l.n += n
	return n, err
}

type writerOnly struct{ io.Writer }

// copyBufs holds the 1 MiB buffers of copied bodies: at most
// Options.MaxTransfers are in use at once.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// loopbackPeer tells whether r came over a loopback connection.
func loopbackPeer(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
