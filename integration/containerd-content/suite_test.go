package containerdcontent

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/content/testsuite"

	"github.com/casfs/casfs/store"
)

// TestContainerdContentSuite runs containerd's own content-store tests
// against casfs's store.
func TestContainerdContentSuite(t *testing.T) {
	testsuite.ContentSuite(t, "casfs", func(ctx context.Context, root string) (context.Context, content.Store, func() error, error) {
		s, err := store.Open(root, store.Options{Create: true})
		if err != nil {
			return ctx, nil, nil, err
		}
		return ctx, adapter{s: s}, s.Close, nil
	})
}
