package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

// What `casfs serve` needs of the store beyond the API: records without
// their documents, reachability from a set of images, and verified
// manifest bytes.

// ImageRecords lists the image records without reading any document
// (ListImages also sizes each image).
func (s *Local) ImageRecords(ctx context.Context) ([]ImageInfo, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	var out []ImageInfo
	err = db.Images().List(ctx, "", func(_ string, rec index.Image) error {
		out = append(out, ImageInfo{Name: rec.Name, Target: rec.Target, Labels: rec.Labels, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt})
		return nil
	})
	return out, err
}

// Reach returns every digest the roots reach through the indexes and
// manifests that are local, with the media type it is reached as. It
// marks as garbage collection does, from these roots only.
func (s *Local) Reach(ctx context.Context, roots []ocispec.Descriptor) (map[digest.Digest]string, error) {
	m := newMarker(s, &gcGraph{blobs: map[digest.Digest]blobRec{}, snaps: map[string]index.Snapshot{}})
	m.types = map[digest.Digest]string{}
	for _, r := range roots {
		m.blob(r.Digest, r.MediaType)
	}
	if err := m.run(ctx); err != nil {
		return nil, err
	}
	return m.types, nil
}

// ReadManifest returns the verified bytes of a manifest or index, fetching
// it first when it is recorded but not local.
func (s *Local) ReadManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	if err := s.ensureLocal(ctx, d); err != nil {
		return nil, err
	}
	return s.readDocument(ctx, d, nil)
}

// errFetchEnded closes a pull-through pipe whose download ended without
// the tee closing it (another fetch of the blob was under way).
var errFetchEnded = errors.New("fetch ended")

// StreamBlob reads a blob that is recorded but not local while it is
// fetched from its upstream and stored (pull-through): the reader gets the
// bytes as they download, so a peer chain does not wait for whole blobs at
// every hop. It returns a nil reader when the blob is local (open it
// instead). The reader fails, and its consumer must discard what it got,
// when the download fails or the blob does not match its digest.
func (s *Local) StreamBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, int64, error) {
	if _, err := s.blobs.Info(ctx, d); err == nil {
		return nil, 0, nil
	}
	info, err := s.ContentInfo(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	if s.lazy == nil {
		return nil, 0, fmt.Errorf("blob %s is not local and no registry is configured to fetch it: %w", d, errdefs.ErrNotFound)
	}
	pr, pw := io.Pipe()
	p := &pullThrough{s: s, d: d, size: info.Size, pr: pr, done: make(chan struct{})}
	go func() {
		p.err = s.lazy(ctx, d, pw)
		close(p.done)
		pw.CloseWithError(errFetchEnded) // no effect when the tee closed it
	}()
	return p, info.Size, nil
}

// pullThrough is StreamBlob's reader: the download's tee while it keeps up,
// then the stored file from where the tee stopped (a download that resumed
// an earlier ingest, or that another fetch was already making).
type pullThrough struct {
	s    *Local
	d    digest.Digest
	size int64
	pr   *io.PipeReader
	done chan struct{}
	err  error // of the fetch, once done is closed
	n    int64
	file *os.File
}

func (p *pullThrough) Read(b []byte) (int, error) {
	if p.file != nil {
		return p.file.Read(b)
	}
	n, err := p.pr.Read(b)
	p.n += int64(n)
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF && p.n == p.size:
		return n, io.EOF // the tee closes cleanly only once the blob is verified and stored
	}
	<-p.done
	if p.err != nil {
		return n, p.err
	}
	f, err := p.s.OpenBlob(context.Background(), p.d)
	if err != nil {
		return n, err
	}
	if _, err := f.Seek(p.n, io.SeekStart); err != nil {
		f.Close()
		return n, err
	}
	p.file = f
	return n, nil
}

func (p *pullThrough) Close() error {
	p.pr.Close() // a tee that writes on fails and is dropped; the download goes on
	if p.file != nil {
		return p.file.Close()
	}
	return nil
}
