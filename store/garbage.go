package store

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/index"
)

// LeaseInfo is one lease (ctr leases ls): its index record.
type LeaseInfo = index.Lease

// LeaseOptions are what `lease create` sets.
type LeaseOptions struct {
	ID      string            `json:"id,omitempty"`      // "" picks a random one
	Expires time.Duration     `json:"expires,omitempty"` // 0: never
	Labels  map[string]string `json:"labels,omitempty"`
}

// CollectOptions choose what a collection sweeps. With neither Content nor
// Snapshots set it sweeps both.
type CollectOptions struct {
	Content   bool `json:"content,omitempty"`
	Snapshots bool `json:"snapshots,omitempty"`
	DryRun    bool `json:"dryRun,omitempty"`
}

// ImagePruneOptions control `image prune`.
type ImagePruneOptions struct {
	// All removes every image that no image mount and no live lease uses;
	// without it only digest-only names (repo@sha256:...) whose target
	// another, tagged name also points at are removed.
	All    bool `json:"all,omitempty"`
	DryRun bool `json:"dryRun,omitempty"`
}

// RemovedBlob is one blob a collection removed (or would). Size is the
// bytes of its file, 0 when only its record existed.
type RemovedBlob struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// RemovedSnapshot is one snapshot a collection removed (or would).
type RemovedSnapshot struct {
	Key  string `json:"key"`
	Size int64  `json:"size"`
}

// GCReport says what a prune or collection removed, or with DryRun would.
type GCReport struct {
	DryRun    bool              `json:"dryRun,omitempty"`
	Images    []string          `json:"images,omitempty"`
	Leases    []string          `json:"leases,omitempty"` // expired leases
	Blobs     []RemovedBlob     `json:"blobs,omitempty"`
	Snapshots []RemovedSnapshot `json:"snapshots,omitempty"`
	// LazyCaches are the chunk caches of eStargz layers that nothing reads
	// any more (layer gone or complete); Size is the bytes each held.
	LazyCaches []RemovedBlob `json:"lazyCaches,omitempty"`
	Reclaimed  int64         `json:"reclaimed"` // bytes of blob files, snapshots and chunk caches
}

// Garbage is leases and garbage collection (ctr leases, prune, gc).
//
// What is kept: everything reachable from a root. Roots are image records,
// leases that have not expired (with the blobs and snapshots recorded in
// them, and the snapshots an image mount's lease names), blobs and
// snapshots labelled containerd.io/gc.root, active snapshots (writable
// layers and extractions in progress) and the expected digests of ingests
// in progress. From a blob: an index reaches its manifests, a manifest its
// config and layers, a config the layer snapshots of its diff IDs (by chain
// ID), a snapshot its parents, and any blob the blobs its
// containerd.io/gc.ref.content.* labels name. Ingest directories are never
// collected here.
type Garbage interface {
	ListLeases(ctx context.Context) ([]LeaseInfo, error)
	CreateLease(ctx context.Context, opts LeaseOptions) (LeaseInfo, error)
	// RemoveLease deletes a lease; what it held becomes collectable.
	RemoveLease(ctx context.Context, id string) error
	// Collect removes expired leases and what no root reaches.
	Collect(ctx context.Context, opts CollectOptions) (GCReport, error)
	// PruneImages removes image records (see ImagePruneOptions), then the
	// blobs and snapshots only they reached.
	PruneImages(ctx context.Context, opts ImagePruneOptions) (GCReport, error)
	// ForceRemoveContent removes a blob even when an image or lease needs it
	// (RemoveContent refuses such a blob with ErrInUse).
	ForceRemoveContent(ctx context.Context, d digest.Digest) error
}
