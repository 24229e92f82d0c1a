// Package store is casfs's one API: content and image operations composed
// from the blob store (cas), the metadata index, the registry client and the
// snapshotter. The command line talks only to the API interface, so that a
// socket client (when a mount daemon owns the store) and the embedded store
// (when none does) are interchangeable.
package store

import (
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/index"
)

// ContentInfo is what the store knows of one blob: its index record, one
// type from the database to the socket.
type ContentInfo = index.Blob

// IngestStatus is one in-progress ingest.
type IngestStatus struct {
	Ref       string        `json:"ref"`
	Offset    int64         `json:"offset"`
	Total     int64         `json:"total,omitempty"`
	Expected  digest.Digest `json:"expected,omitempty"`
	StartedAt time.Time     `json:"startedAt"`
	UpdatedAt time.Time     `json:"updatedAt"`
}

// IngestOptions are the caller's expectations of an ingest.
type IngestOptions struct {
	Expected digest.Digest
	Size     int64
	// Resumed, when set, is called once with the offset an ingest resumes at.
	Resumed func(offset int64) `json:"-"`
	// Restarted, when set, is called instead of Resumed when the input did
	// not match the stored bytes of an ingest without an expected digest:
	// stored bytes were found, kept of them were the input's and kept.
	Restarted func(stored, kept int64) `json:"-"`
}

// Problem is one finding of a verification: Digest names the blob.
type Problem struct {
	Digest digest.Digest `json:"digest"`
	Reason string        `json:"reason"`
}

// Content is the content-store half of the API (ctr content).
type Content interface {
	// ResolveDigest accepts "sha256:<hex>" or a unique hex prefix of at least
	// 12 characters, as users type them.
	ResolveDigest(ctx context.Context, s string) (digest.Digest, error)
	Ingest(ctx context.Context, ref string, r io.Reader, opts IngestOptions) (ContentInfo, error)
	ListContent(ctx context.Context) ([]ContentInfo, error)
	ContentInfo(ctx context.Context, d digest.Digest) (ContentInfo, error)
	// ReadContent writes the blob to w after checking its bytes still
	// match its digest: a corrupt blob is an error, never served.
	ReadContent(ctx context.Context, d digest.Digest, w io.Writer) error
	RemoveContent(ctx context.Context, d digest.Digest) error
	// VerifyContent re-hashes the named blobs (all when none) and returns
	// the problems found; the error is for failures to verify at all.
	VerifyContent(ctx context.Context, ds []digest.Digest) ([]Problem, error)
	LabelContent(ctx context.Context, d digest.Digest, set map[string]string, del []string) (ContentInfo, error)
	ActiveIngests(ctx context.Context) ([]IngestStatus, error)
	// ExportContent writes a tar of blobs/sha256/<hex> members (all blobs when ds is empty).
	ExportContent(ctx context.Context, w io.Writer, ds []digest.Digest) error
	// ImportContent reads such a tar; nothing becomes visible unless every member verifies.
	ImportContent(ctx context.Context, r io.Reader) ([]ContentInfo, error)
}

// API is everything the command line can ask of a store.
type API interface {
	Content
	Images
	Archives
	Garbage
	Snapshots
	Checker
	Close() error
}
