package containerdcontent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// adapter is casfs's store as a containerd content.Store. It only
// translates: every rule the suite checks is casfs's own.
type adapter struct{ s *store.Local }

func toContainerd(err error) error {
	if err == nil {
		return nil
	}
	for _, m := range []struct{ ours, theirs error }{
		{errdefs.ErrNotFound, cerrdefs.ErrNotFound},
		{errdefs.ErrExists, cerrdefs.ErrAlreadyExists},
		{errdefs.ErrLocked, cerrdefs.ErrUnavailable},
		{errdefs.ErrFailedPrecondition, cerrdefs.ErrFailedPrecondition},
		{errdefs.ErrInvalidArgument, cerrdefs.ErrInvalidArgument},
	} {
		if errors.Is(err, m.ours) {
			return fmt.Errorf("%w: %w", err, m.theirs)
		}
	}
	return err
}

func info(i store.ContentInfo) content.Info {
	return content.Info{Digest: i.Digest, Size: i.Size, CreatedAt: i.CreatedAt, UpdatedAt: i.UpdatedAt, Labels: i.Labels}
}

func status(st cas.Status) content.Status {
	return content.Status{Ref: st.Ref, Offset: st.Offset, Total: st.Total, Expected: st.Expected, StartedAt: st.StartedAt, UpdatedAt: st.UpdatedAt}
}

func (a adapter) Info(ctx context.Context, d digest.Digest) (content.Info, error) {
	i, err := a.s.ContentInfo(ctx, d)
	return info(i), toContainerd(err)
}

func (a adapter) Update(ctx context.Context, in content.Info, fieldpaths ...string) (content.Info, error) {
	cur, err := a.s.ContentInfo(ctx, in.Digest)
	if err != nil {
		return content.Info{}, toContainerd(err)
	}
	set, del := map[string]string{}, []string{}
	if len(fieldpaths) == 0 {
		for k := range cur.Labels {
			del = append(del, k)
		}
		for k, v := range in.Labels {
			set[k] = v
		}
	}
	for _, p := range fieldpaths {
		switch {
		case p == "labels":
			for k := range cur.Labels {
				del = append(del, k)
			}
			for k, v := range in.Labels {
				set[k] = v
			}
		case strings.HasPrefix(p, "labels."):
			k := strings.TrimPrefix(p, "labels.")
			if v, ok := in.Labels[k]; ok {
				set[k] = v
			} else {
				del = append(del, k)
			}
		default:
			return content.Info{}, fmt.Errorf("cannot update %q: %w", p, cerrdefs.ErrInvalidArgument)
		}
	}
	for k := range set {
		for i, d := range del {
			if d == k {
				del = append(del[:i], del[i+1:]...)
				break
			}
		}
	}
	i, err := a.s.LabelContent(ctx, in.Digest, set, del)
	return info(i), toContainerd(err)
}

func (a adapter) Walk(ctx context.Context, fn content.WalkFunc, filters ...string) error {
	if len(filters) > 0 {
		return fmt.Errorf("walk filters: %w", cerrdefs.ErrNotImplemented)
	}
	infos, err := a.s.ListContent(ctx)
	if err != nil {
		return toContainerd(err)
	}
	for _, i := range infos {
		if err := fn(info(i)); err != nil {
			return err
		}
	}
	return nil
}

func (a adapter) Delete(ctx context.Context, d digest.Digest) error {
	return toContainerd(a.s.ForceRemoveContent(ctx, d))
}

func (a adapter) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	r, err := a.s.Blobs().ReaderAt(ctx, desc.Digest)
	return r, toContainerd(err)
}

func (a adapter) Status(ctx context.Context, ref string) (content.Status, error) {
	st, err := a.s.Blobs().Status(ctx, ref)
	return status(st), toContainerd(err)
}

func (a adapter) ListStatuses(ctx context.Context, filters ...string) ([]content.Status, error) {
	if len(filters) > 0 {
		return nil, fmt.Errorf("status filters: %w", cerrdefs.ErrNotImplemented)
	}
	sts, err := a.s.Blobs().ListStatuses(ctx)
	var out []content.Status
	for _, st := range sts {
		out = append(out, status(st))
	}
	return out, toContainerd(err)
}

func (a adapter) Abort(ctx context.Context, ref string) error {
	return toContainerd(a.s.Blobs().Abort(ctx, ref))
}

func (a adapter) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	if wo.Ref == "" {
		return nil, fmt.Errorf("writer needs a ref: %w", cerrdefs.ErrInvalidArgument)
	}
	w, err := a.s.Blobs().Writer(ctx, wo.Ref, cas.WriterOpts{Expected: wo.Desc.Digest, Total: wo.Desc.Size})
	if err != nil {
		return nil, toContainerd(err)
	}
	return &writer{w: w, s: a.s}, nil
}

type writer struct {
	w cas.Writer
	s *store.Local
}

func (w *writer) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	return n, toContainerd(err)
}
func (w *writer) Close() error           { return toContainerd(w.w.Close()) }
func (w *writer) Digest() digest.Digest  { return w.w.Digest() }
func (w *writer) Truncate(n int64) error { return toContainerd(w.w.Truncate(n)) }

func (w *writer) Status() (content.Status, error) {
	st, err := w.w.Status()
	return status(st), toContainerd(err)
}

func (w *writer) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	var i content.Info
	for _, o := range opts {
		if err := o(&i); err != nil {
			return err
		}
	}
	_, err := w.s.CommitContent(ctx, w.w, size, expected, i.Labels)
	return toContainerd(err)
}
