package api

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// fakeStore is an in-memory store.API with the embedded store's error
// classes, for driving the server where the real store cannot (or not yet)
// go: progress streams, blocked calls, failures in mid-stream.
type fakeStore struct {
	// API is nil: an operation the fake does not implement panics, which
	// the server answers with 500, so a new operation needs no fake method.
	store.API

	mu      sync.Mutex
	blobs   map[digest.Digest]*fakeBlob
	ingests map[string]*fakeIngest

	// onIngestRead, when set, sees the running byte count of each ingest.
	onIngestRead func(ref string, n int64)
	// pull, when set, implements Pull (and FetchContent and Push report
	// its events); otherwise image calls are not implemented.
	pull func(ctx context.Context, ref string, opts store.PullOptions) (store.ImageInfo, error)
	// readContent, when set, replaces ReadContent.
	readContent func(ctx context.Context, d digest.Digest, w io.Writer) error
}

type fakeBlob struct {
	info    store.ContentInfo
	data    []byte
	corrupt bool
}

type fakeIngest struct {
	data     []byte
	locked   bool
	expected digest.Digest
	total    int64
	started  time.Time
	updated  time.Time
}

var _ store.API = (*fakeStore)(nil)

func newFakeStore() *fakeStore {
	return &fakeStore{blobs: map[digest.Digest]*fakeBlob{}, ingests: map[string]*fakeIngest{}}
}

func (f *fakeStore) ResolveDigest(ctx context.Context, in string) (digest.Digest, error) {
	if strings.Contains(in, ":") {
		return store.ParseDigest(in)
	}
	if len(in) == 64 {
		return store.ParseDigest("sha256:" + in)
	}
	if len(in) < 12 || len(in) > 64 || strings.Trim(in, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%q is not a digest or a hex prefix of at least 12 characters: %w", in, errdefs.ErrInvalidArgument)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var found []digest.Digest
	for d := range f.blobs {
		if strings.HasPrefix(d.Encoded(), in) {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no blob matches %s: %w", in, errdefs.ErrNotFound)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%s is ambiguous: %w", in, errdefs.ErrInvalidArgument)
}

func (f *fakeStore) Ingest(ctx context.Context, ref string, r io.Reader, opts store.IngestOptions) (store.ContentInfo, error) {
	if ref == "" {
		return store.ContentInfo{}, fmt.Errorf("ingest ref is empty: %w", errdefs.ErrInvalidArgument)
	}
	if opts.Expected != "" {
		if _, err := store.ParseDigest(opts.Expected.String()); err != nil {
			return store.ContentInfo{}, err
		}
	}
	f.mu.Lock()
	ing := f.ingests[ref]
	if ing != nil && ing.locked {
		f.mu.Unlock()
		return store.ContentInfo{}, fmt.Errorf("ingest %s: ref is held by another writer: %w", ref, errdefs.ErrLocked)
	}
	now := time.Now().UTC()
	if ing == nil {
		ing = &fakeIngest{started: now, updated: now}
		f.ingests[ref] = ing
	}
	ing.locked, ing.expected, ing.total = true, opts.Expected, opts.Size
	off := int64(len(ing.data))
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		ing.locked = false
		f.mu.Unlock()
	}()
	if off > 0 && opts.Resumed != nil {
		opts.Resumed(off)
	}
	if _, err := io.CopyN(io.Discard, r, off); err != nil {
		return store.ContentInfo{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return store.ContentInfo{}, fmt.Errorf("ingest %s: %w", ref, err)
		}
		n, err := r.Read(buf)
		f.mu.Lock()
		ing.data = append(ing.data, buf[:n]...)
		ing.updated = time.Now().UTC()
		total := int64(len(ing.data))
		f.mu.Unlock()
		if n > 0 && f.onIngestRead != nil {
			f.onIngestRead(ref, total)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return store.ContentInfo{}, fmt.Errorf("ingest %s: %w", ref, err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	got := digest.FromBytes(ing.data)
	if opts.Size > 0 && int64(len(ing.data)) != opts.Size {
		return store.ContentInfo{}, fmt.Errorf("ingest %s: %d bytes, expected %d: %w", ref, len(ing.data), opts.Size, errdefs.ErrFailedPrecondition)
	}
	if opts.Expected != "" && got != opts.Expected {
		return store.ContentInfo{}, fmt.Errorf("ingest %s: content is %s, expected %s: %w", ref, got, opts.Expected, errors.Join(errdefs.ErrDigestMismatch, errdefs.ErrFailedPrecondition))
	}
	delete(f.ingests, ref)
	if b := f.blobs[got]; b != nil {
		return b.info, nil
	}
	b := &fakeBlob{data: ing.data, info: store.ContentInfo{Digest: got, Size: int64(len(ing.data)), CreatedAt: now, UpdatedAt: now}}
	f.blobs[got] = b
	return b.info, nil
}

func (f *fakeStore) ListContent(ctx context.Context) ([]store.ContentInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.ContentInfo
	for _, b := range f.blobs {
		out = append(out, b.info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

func (f *fakeStore) get(d digest.Digest) (*fakeBlob, error) {
	b := f.blobs[d]
	if b == nil {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return b, nil
}

func (f *fakeStore) ContentInfo(ctx context.Context, d digest.Digest) (store.ContentInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := f.get(d)
	if err != nil {
		return store.ContentInfo{}, err
	}
	return b.info, nil
}

func (f *fakeStore) ReadContent(ctx context.Context, d digest.Digest, w io.Writer) error {
	if f.readContent != nil {
		return f.readContent(ctx, d, w)
	}
	f.mu.Lock()
	b, err := f.get(d)
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if b.corrupt {
		return fmt.Errorf("read %s: content does not match its digest: %w", d, errdefs.ErrDigestMismatch)
	}
	_, err = w.Write(b.data)
	return err
}

func (f *fakeStore) RemoveContent(ctx context.Context, d digest.Digest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.get(d); err != nil {
		return err
	}
	delete(f.blobs, d)
	return nil
}

func (f *fakeStore) VerifyContent(ctx context.Context, ds []digest.Digest) ([]store.Problem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(ds) == 0 {
		for d := range f.blobs {
			ds = append(ds, d)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	}
	var problems []store.Problem
	for _, d := range ds {
		b, err := f.get(d)
		if err != nil {
			return nil, err
		}
		if b.corrupt {
			problems = append(problems, store.Problem{Digest: d, Reason: "content does not match its digest"})
		}
	}
	return problems, nil
}

func (f *fakeStore) LabelContent(ctx context.Context, d digest.Digest, set map[string]string, del []string) (store.ContentInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := f.get(d)
	if err != nil {
		return store.ContentInfo{}, err
	}
	labels := map[string]string{}
	for k, v := range b.info.Labels {
		labels[k] = v
	}
	for k, v := range set {
		labels[k] = v
	}
	for _, k := range del {
		delete(labels, k)
	}
	if len(labels) == 0 {
		labels = nil
	}
	b.info.Labels = labels
	b.info.UpdatedAt = time.Now().UTC()
	return b.info, nil
}

func (f *fakeStore) ActiveIngests(ctx context.Context) ([]store.IngestStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []store.IngestStatus{}
	for ref, ing := range f.ingests {
		out = append(out, store.IngestStatus{Ref: ref, Offset: int64(len(ing.data)), Total: ing.total, Expected: ing.expected, StartedAt: ing.started, UpdatedAt: ing.updated})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

func (f *fakeStore) ExportContent(ctx context.Context, w io.Writer, ds []digest.Digest) error {
	all, _ := f.ListContent(ctx)
	if len(ds) == 0 {
		for _, c := range all {
			ds = append(ds, c.Digest)
		}
	}
	f.mu.Lock()
	var blobs []*fakeBlob
	for _, d := range ds {
		b, err := f.get(d)
		if err != nil {
			f.mu.Unlock()
			return err
		}
		blobs = append(blobs, b)
	}
	f.mu.Unlock()
	tw := tar.NewWriter(w)
	for _, b := range blobs {
		hdr := &tar.Header{Name: "blobs/sha256/" + b.info.Digest.Encoded(), Mode: 0o444, Size: int64(len(b.data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(b.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

func (f *fakeStore) ImportContent(ctx context.Context, r io.Reader) ([]store.ContentInfo, error) {
	tr := tar.NewReader(r)
	type member struct {
		d    digest.Digest
		data []byte
	}
	var all []member
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("import: read archive: %w", err)
		}
		d, err := store.ParseDigest("sha256:" + strings.TrimPrefix(hdr.Name, "blobs/sha256/"))
		if err != nil || !strings.HasPrefix(hdr.Name, "blobs/sha256/") {
			return nil, fmt.Errorf("import: member %q is not named by its digest: %w", hdr.Name, errdefs.ErrInvalidArgument)
		}
		var buf bytes.Buffer
		if _, err := io.Copy(&buf, tr); err != nil {
			return nil, fmt.Errorf("import %s: %w", hdr.Name, err)
		}
		if digest.FromBytes(buf.Bytes()) != d {
			return nil, fmt.Errorf("import: member %s does not match its digest: %w", hdr.Name, errdefs.ErrDigestMismatch)
		}
		all = append(all, member{d, buf.Bytes()})
	}
	var out []store.ContentInfo
	for _, m := range all {
		info, err := f.Ingest(ctx, "import-"+m.d.String(), bytes.NewReader(m.data), store.IngestOptions{Expected: m.d})
		if err != nil {
			return out, err
		}
		out = append(out, info)
	}
	return out, nil
}

func (f *fakeStore) Pull(ctx context.Context, ref string, opts store.PullOptions) (store.ImageInfo, error) {
	if f.pull == nil {
		return store.ImageInfo{}, fmt.Errorf("pull: %w", errdefs.ErrNotImplemented)
	}
	return f.pull(ctx, ref, opts)
}

func (f *fakeStore) FetchContent(ctx context.Context, ref string, opts store.PullOptions) (ocispec.Descriptor, error) {
	if f.pull == nil {
		return ocispec.Descriptor{}, fmt.Errorf("fetch: %w", errdefs.ErrNotImplemented)
	}
	info, err := f.pull(ctx, ref, opts)
	return info.Target, err
}

func (f *fakeStore) Push(ctx context.Context, ref, remote string, opts store.PushOptions) error {
	if f.pull == nil {
		return fmt.Errorf("push: %w", errdefs.ErrNotImplemented)
	}
	_, err := f.pull(ctx, ref, store.PullOptions{RegistryOptions: opts.RegistryOptions, Progress: opts.Progress})
	return err
}

func (f *fakeStore) ListImages(ctx context.Context) ([]store.ImageInfo, error) {
	return nil, fmt.Errorf("image ls: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) GetImage(ctx context.Context, ref, platform string) (store.ImageDetail, error) {
	return store.ImageDetail{}, fmt.Errorf("image info %s (platform %q): %w", ref, platform, errdefs.ErrNotImplemented)
}

func (f *fakeStore) TagImage(ctx context.Context, src string, dsts []string) error {
	return fmt.Errorf("image tag: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) ConvertImage(ctx context.Context, src, dst string, opts store.ConvertOptions) (store.ImageInfo, error) {
	return store.ImageInfo{}, fmt.Errorf("image convert: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) RemoveImage(ctx context.Context, ref string) error {
	return fmt.Errorf("image rm %s: %w", ref, errdefs.ErrNotImplemented)
}

func (f *fakeStore) Close() error { return nil }

// corrupt marks a blob as no longer matching its digest.
func (f *fakeStore) corrupt(d digest.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b := f.blobs[d]; b != nil {
		b.corrupt = true
	}
}
