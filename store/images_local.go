package store

import (
	"context"
	"fmt"

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

func (s *Local) ListImages(ctx context.Context) ([]ImageInfo, error) {
	return nil, fmt.Errorf("image ls: %w", errdefs.ErrNotImplemented)
}

func (s *Local) GetImage(ctx context.Context, ref string) (ImageDetail, error) {
	return ImageDetail{}, fmt.Errorf("image info: %w", errdefs.ErrNotImplemented)
}

func (s *Local) TagImage(ctx context.Context, src string, dsts []string) error {
	return fmt.Errorf("image tag: %w", errdefs.ErrNotImplemented)
}

func (s *Local) RemoveImage(ctx context.Context, ref string) error {
	return fmt.Errorf("image rm: %w", errdefs.ErrNotImplemented)
}
