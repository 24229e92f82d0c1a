package store

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"
)

// SnapshotInfo is one snapshot record (ctr snapshot ls).
type SnapshotInfo struct {
	Key       string            `json:"key"`    // chain ID for committed layer snapshots
	Parent    string            `json:"parent"` // "" for a base layer
	Kind      string            `json:"kind"`   // committed or active
	ID        string            `json:"id"`     // directory under snapshots/
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
	UpdatedAt time.Time         `json:"updatedAt"`
}

// SnapshotUsage is the disk use of one snapshot's own directory.
type SnapshotUsage struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`   // bytes allocated
	Inodes int64  `json:"inodes"` // hardlinks counted once
}

// MountOptions control `image mount`.
type MountOptions struct {
	// ReadWrite puts a writable snapshot on top of the image's layers. It is
	// keyed by the target, so that it survives an unmount (and a later mount
	// of the same target finds it) until an unmount with remove.
	ReadWrite bool `json:"readWrite,omitempty"`
}

// ImageMount is one kernel overlay mount made by `image mount`.
type ImageMount struct {
	Target    string        `json:"target"` // absolute, symlinks resolved
	Image     string        `json:"image"`
	Manifest  digest.Digest `json:"manifest"`
	Snapshot  string        `json:"snapshot"`           // top committed layer snapshot (chain ID)
	Writable  string        `json:"writable,omitempty"` // key of the writable snapshot, if any
	Mounted   bool          `json:"mounted"`
	CreatedAt time.Time     `json:"createdAt"`
}

// CheckOptions control `image check`.
type CheckOptions struct {
	// VerifyDiffs re-reads every layer blob, checking its digest and the
	// digest of its uncompressed stream against the config's diff ID,
	// instead of trusting the diff ID recorded on its committed snapshot.
	VerifyDiffs bool `json:"verifyDiffs,omitempty"`
}

// CheckReport is what `image check` found. Problems name the blob (for a
// snapshot problem, its layer's blob).
type CheckReport struct {
	Image    string        `json:"image"`
	Manifest digest.Digest `json:"manifest"`
	Blobs    int           `json:"blobs"`  // blobs checked
	Layers   int           `json:"layers"` // layer snapshots checked
	Problems []Problem     `json:"problems"`
}

// Snapshots is snapshots, image mounts and image checks (ctr snapshot,
// image mount/unmount, image check).
type Snapshots interface {
	ListSnapshots(ctx context.Context) ([]SnapshotInfo, error)
	// RemoveSnapshot refuses (ErrFailedPrecondition) a snapshot that others
	// are based on, and (ErrInUse) one that an image mount uses.
	RemoveSnapshot(ctx context.Context, key string) error
	// SnapshotUsage returns the usage of key, or of every snapshot when key is "".
	SnapshotUsage(ctx context.Context, key string) ([]SnapshotUsage, error)
	// MountImage mounts ref's layers at target (an absolute path to an empty
	// directory that is not a mount point), unpacking them first if needed.
	MountImage(ctx context.Context, ref, target string, opts MountOptions) (ImageMount, error)
	// UnmountImage unmounts what MountImage mounted at target; remove also
	// deletes its writable snapshot.
	UnmountImage(ctx context.Context, target string, remove bool) (ImageMount, error)
	// ListImageMounts returns the mounts (and kept writable snapshots) recorded.
	ListImageMounts(ctx context.Context) ([]ImageMount, error)
	// CheckImage reports missing blobs, uncommitted snapshots and wrong
	// diff IDs of ref; the error is for failures to check at all.
	CheckImage(ctx context.Context, ref string, opts CheckOptions) (CheckReport, error)
}
