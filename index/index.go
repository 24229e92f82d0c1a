// Package index keeps casfs's metadata in badger: blob records, image
// records, snapshot records and leases, each as a JSON value under a typed
// key prefix, plus a schema version key.
package index

import (
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Blob is the record of one committed blob.
type Blob struct {
	Digest    digest.Digest     `json:"digest"`
	Size      int64             `json:"size"`
	MediaType string            `json:"mediaType,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
	UpdatedAt time.Time         `json:"updatedAt"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Image is a named pointer to a manifest or index.
type Image struct {
	Name      string             `json:"name"`
	Target    ocispec.Descriptor `json:"target"`
	Labels    map[string]string  `json:"labels,omitempty"`
	CreatedAt time.Time          `json:"createdAt"`
	UpdatedAt time.Time          `json:"updatedAt"`
}

// SnapshotKind tells committed snapshots from writable ones.
type SnapshotKind string

const (
	SnapshotCommitted SnapshotKind = "committed"
	SnapshotActive    SnapshotKind = "active"
)

// Snapshot is the record of one snapshot directory (snapshots/<ID>/fs).
type Snapshot struct {
	Key       string            `json:"key"`    // chain ID for committed layer snapshots
	Parent    string            `json:"parent"` // key of the parent, "" for a base layer
	ID        string            `json:"id"`     // directory name under snapshots/
	Kind      SnapshotKind      `json:"kind"`
	Size      int64             `json:"size,omitempty"`
	Inodes    int64             `json:"inodes,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
	UpdatedAt time.Time         `json:"updatedAt"`
}

// Lease protects resources from garbage collection while it lives.
type Lease struct {
	ID        string            `json:"id"`
	CreatedAt time.Time         `json:"createdAt"`
	Expires   time.Time         `json:"expires,omitzero"` // zero: never
	Labels    map[string]string `json:"labels,omitempty"`
	Blobs     []digest.Digest   `json:"blobs,omitempty"`
	Snapshots []string          `json:"snapshots,omitempty"`
}
