package store

import (
	"context"
	"fmt"
	"runtime"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
)

// The image operations land with the registry client; until then they say so.

func (s *Local) Pull(ctx context.Context, ref string, opts PullOptions) (ImageInfo, error) {
	return ImageInfo{}, fmt.Errorf("pull: %w", errdefs.ErrNotImplemented)
}

func (s *Local) FetchContent(ctx context.Context, ref string, opts PullOptions) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, fmt.Errorf("fetch: %w", errdefs.ErrNotImplemented)
}

func (s *Local) Push(ctx context.Context, ref, remote string, opts PushOptions) error {
	return fmt.Errorf("push: %w", errdefs.ErrNotImplemented)
}

func defaultPlatform() string { return runtime.GOOS + "/" + runtime.GOARCH }
