package index

import (
	"context"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
)

// Labels that garbage collection reads, with containerd's meaning.
const (
	// LabelGCRoot on a blob or snapshot record makes it a root: it and what
	// it reaches are kept whatever else refers to them.
	LabelGCRoot = "containerd.io/gc.root"
	// LabelGCRefContent is the prefix of labels whose value is the digest
	// of another blob the labelled blob keeps alive
	// (containerd.io/gc.ref.content.<anything>=sha256:...).
	LabelGCRefContent = "containerd.io/gc.ref.content."
)

// LeaseRecorder adds resources to the lease an operation holds. The store
// implements it; fetch and layers reach it through the context, so that
// every blob and snapshot an operation is about to rely on is in its lease
// before the operation looks at it.
type LeaseRecorder interface {
	LeaseResources(ctx context.Context, blobs []digest.Digest, snapshots []string) error
}

type leaseRecorderKey struct{}

// WithLeaseRecorder returns ctx carrying r.
func WithLeaseRecorder(ctx context.Context, r LeaseRecorder) context.Context {
	return context.WithValue(ctx, leaseRecorderKey{}, r)
}

// LeaseRecorderFrom returns the recorder ctx carries, if any.
func LeaseRecorderFrom(ctx context.Context) (LeaseRecorder, bool) {
	r, ok := ctx.Value(leaseRecorderKey{}).(LeaseRecorder)
	return r, ok && r != nil
}

// AddToLease records blobs and snapshot keys in the lease that ctx carries,
// and does nothing when ctx carries none. Callers call it before they check
// whether a blob or snapshot exists, so that a garbage collection either
// finished before (and the caller finds the thing missing and makes it
// again) or sees it leased.
func AddToLease(ctx context.Context, blobs []digest.Digest, snapshots ...string) error {
	r, ok := LeaseRecorderFrom(ctx)
	if !ok || (len(blobs) == 0 && len(snapshots) == 0) {
		return nil
	}
	// A lease outlives its process by at most its expiry; a power loss
	// ends the operation it protects anyway.
	return r.LeaseResources(Unsynced(ctx), blobs, snapshots)
}

// maxLeaseID is containerd's limit for identifiers.
const maxLeaseID = 76

// ValidateLeaseID accepts what containerd accepts as an identifier:
// letters, digits, '.', '_' and '-', starting with a letter or digit, at
// most 76 characters.
func ValidateLeaseID(id string) error {
	bad := id == "" || len(id) > maxLeaseID || strings.IndexAny(id[:1], "._-") == 0
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			bad = true
			break
		}
	}
	if bad {
		return fmt.Errorf("lease id %q: want 1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit: %w",
			id, maxLeaseID, errdefs.ErrInvalidArgument)
	}
	return nil
}
