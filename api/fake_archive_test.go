package api

import (
	"context"
	"fmt"
	"io"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

func (f *fakeStore) ExportImages(ctx context.Context, w io.Writer, refs []string, opts store.ExportOptions) error {
	return fmt.Errorf("export: %w", errdefs.ErrNotImplemented)
}

func (f *fakeStore) ImportImages(ctx context.Context, r io.Reader, opts store.ImportOptions) ([]store.ImageInfo, error) {
	return nil, fmt.Errorf("import: %w", errdefs.ErrNotImplemented)
}
