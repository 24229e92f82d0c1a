package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/fetch"
	"github.com/casfs/casfs/index"
)

// labelPlainHTTP marks blobs pulled over plain HTTP, so that a lazy fetch
// of them later talks to the registry the same way.
const labelPlainHTTP = "casfs.fetch/plain-http"

// progressAdapter turns the fetcher's per-blob callbacks into events.
type progressAdapter struct {
	fn     ProgressFunc
	status string // fetching or pushing
}

func (p progressAdapter) Start(d ocispec.Descriptor) {
	p.fn(ProgressEvent{Digest: d.Digest, MediaType: d.MediaType, Total: d.Size, Status: "waiting"})
}

func (p progressAdapter) Update(d ocispec.Descriptor, n int64) {
	p.fn(ProgressEvent{Digest: d.Digest, MediaType: d.MediaType, Total: d.Size, Done: n, Status: p.status})
}

func (p progressAdapter) Done(d ocispec.Descriptor, err error, existed bool) {
	ev := ProgressEvent{Digest: d.Digest, MediaType: d.MediaType, Total: d.Size, Done: d.Size, Status: "done"}
	switch {
	case err != nil:
		ev.Status, ev.Error, ev.Done = "error", err.Error(), 0
	case existed:
		ev.Status = "exists"
	}
	p.fn(ev)
}

// fetchOptions are what one operation asks of the store's fetcher.
func (s *Local) fetchOptions(ro RegistryOptions, platform string, all, lazy bool, maxConc int, progress ProgressFunc, status string) fetch.Options {
	opts := fetch.Options{
		HostsDir: ro.HostsDir, PlainHTTP: ro.PlainHTTP, Username: ro.Username, Password: ro.Password, Deadlines: ro.Deadlines, TLS: ro.TLS, Config: ro.Config,
		Platform: platform, HostPlatform: s.host.Spec(), AllPlatforms: all, MaxConcurrent: maxConc, Lazy: lazy,
	}
	if progress != nil {
		opts.Progress = progressAdapter{fn: progress, status: status}
	}
	return opts
}

func (s *Local) Pull(ctx context.Context, ref string, opts PullOptions) (ImageInfo, error) {
	// None of a pull's records (blobs, labels, leases, snapshots) is
	// synced on its own: the image record's sync at the end makes them
	// durable together (the log is written in order), and until then
	// nothing names them but the pull's lease. A blob file is durable
	// when committed; a power loss that takes its record leaves it as a
	// kill between commit and record does, for the next pull to record
	// and `casfs check` to adopt. Synced one by one, the records of a
	// 20-layer pull cost a sync each between a download and the next.
	ctx = index.Unsynced(ctx)
	ctx, release, err := s.HoldLease(ctx, "pull "+ref) // until the image record exists
	if err != nil {
		return ImageInfo{}, err
	}
	defer release()
	fo := s.fetchOptions(opts.RegistryOptions, opts.Platform, opts.AllPlatforms, opts.Lazy, opts.MaxConcurrent, opts.Progress, "fetching")
	// A name pulled for the first time resolves with its manifest's GET
	// (one round trip less); a re-pull asks with HEAD and may find the
	// manifest local (fetch.Options.ResolveByGet).
	_, err = s.image(ctx, ref)
	fo.ResolveByGet = errors.Is(err, errdefs.ErrNotFound)
	p, err := s.fetch.Resolve(ctx, ref, fo)
	if err != nil {
		return ImageInfo{}, err
	}
	// The pull is fetch's composition of handlers; unless --no-unpack or
	// --lazy, the unpacker wraps it and unpacks layers while they download.
	h, fctx := p.Handler(), ctx
	var opens *tocOpens
	if opts.Lazy {
		opens = s.newTOCOpens(ctx, p)
		defer opens.stop()
		h = p.HandlerThen(func(ctx context.Context, l ocispec.Descriptor) { opens.start(ctx, p.Name, l) })
	}
	var u *pullUnpacker
	if !opts.NoUnpack && !opts.Lazy {
		u = newPullUnpacker(ctx, s, opts)
		h, fctx = u.wrap(h), u.ctx
	}
	err = fetch.Dispatch(fctx, p.Limit(), h, p.Target)
	if u != nil {
		err = u.wait(err)
	}
	if err != nil {
		return ImageInfo{}, err
	}
	res, err := p.Result(ctx)
	if err != nil {
		return ImageInfo{}, err
	}
	if opts.PlainHTTP {
		s.markPlainHTTP(ctx, res)
	}
	if opts.Lazy {
		if err := s.pullTOCs(ctx, opens, res, opts.NoComplete); err != nil {
			return ImageInfo{}, err
		}
		if s.lazyLayers != nil {
			s.lazyLayers.keepCaller(ref, opts.RegistryOptions)
		}
	}
	rec, err := s.recordImage(index.Synced(ctx), res.Name, res.Target)
	if err != nil {
		return ImageInfo{}, err
	}
	s.changed()
	if opts.Lazy && s.lazyLayers != nil {
		s.goBackground(s.lazyLayers.completeAll)
	}
	return s.imageInfo(ctx, rec), nil
}

// unpackable: only manifests this machine can run are unpacked when all
// platforms are pulled (their content is stored either way).
func (s *Local) unpackable(md ocispec.Descriptor, opts PullOptions) bool {
	return !opts.AllPlatforms || md.Platform == nil || s.host.Match(md.Platform)
}

func (s *Local) markPlainHTTP(ctx context.Context, res fetch.PullResult) {
	for _, m := range res.Manifests {
		for _, l := range m.Layers {
			s.LabelContent(ctx, l.Digest, map[string]string{labelPlainHTTP: "true"}, nil)
		}
	}
}

func (s *Local) FetchContent(ctx context.Context, ref string, opts PullOptions) (ocispec.Descriptor, error) {
	ctx, release, err := s.HoldLease(ctx, "fetch "+ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer release()
	fo := s.fetchOptions(opts.RegistryOptions, opts.Platform, opts.AllPlatforms, false, opts.MaxConcurrent, opts.Progress, "fetching")
	desc, err := s.fetch.FetchContent(ctx, ref, fo)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	s.changed()
	return desc, nil
}

func (s *Local) Push(ctx context.Context, ref, remote string, opts PushOptions) error {
	ctx, release, err := s.HoldLease(ctx, "push "+ref)
	if err != nil {
		return err
	}
	defer release()
	rec, err := s.image(ctx, ref)
	if err != nil {
		return err
	}
	if err := index.AddToLease(ctx, []digest.Digest{rec.Target.Digest}); err != nil {
		return err
	}
	if remote == "" {
		remote = rec.Name
	}
	fo := s.fetchOptions(opts.RegistryOptions, opts.Platform, false, false, opts.MaxConcurrent, opts.Progress, "pushing")
	return s.fetch.Push(ctx, rec.Name, rec.Target, remote, fo)
}

// EnableLazyFetch lets reads of recorded-but-missing blobs fetch them from
// the registry their source label names (the mount daemon turns this on).
// Concurrent readers of one blob share one download, bounded by timeout.
func (s *Local) EnableLazyFetch(ro RegistryOptions, timeout time.Duration) {
	s.lazyLayers = &lazyLayers{s: s, ro: ro, timeout: timeout, ctx: s.closing, complete: true,
		open: map[digest.Digest]*layerFiles{}, completing: map[string]bool{}}
	s.goBackground(s.lazyLayers.completeAll)
	s.lazy = func(ctx context.Context, d digest.Digest, tee fetch.TeeWriter) error {
		ch := s.lazyGroup.DoChan(d.String(), func() (any, error) {
			// One download serves every waiter: it must not die with the
			// first caller's context, only with its own bound.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
			defer cancel()
			return nil, s.fetchMissing(fctx, ro, d, tee)
		})
		select {
		case r := <-ch:
			return r.Err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// fetchRecorded fetches a recorded blob whose file is missing for an
// operation that brought registry options ro: with ro when a caller sent
// them or no daemon fetches lazily, else through the daemon's lazy fetch
// (one download shared by every reader, with the daemon's options or the
// caller's kept for the blob's source).
func (s *Local) fetchRecorded(ctx context.Context, ro RegistryOptions, d digest.Digest) error {
	if s.lazy != nil && !ro.fromCaller() {
		return s.lazy(ctx, d, nil)
	}
	return s.fetchMissing(ctx, ro, d, nil)
}

func (s *Local) fetchMissing(ctx context.Context, ro RegistryOptions, d digest.Digest, tee fetch.TeeWriter) error {
	ctx, release, err := s.HoldLease(ctx, "lazy fetch "+d.String())
	if err != nil {
		return err
	}
	defer release()
	b, err := s.ContentInfo(ctx, d)
	if err != nil {
		return err
	}
	ro = s.registryFor(b, ro)
	ro.PlainHTTP = ro.PlainHTTP || b.Labels[labelPlainHTTP] == "true"
	if tee != nil {
		ctx = fetch.WithTee(ctx, tee)
	}
	fo := s.fetchOptions(ro, "", false, false, 1, nil, "")
	if err := s.fetch.FetchBlob(ctx, d, fo); err != nil && !errors.Is(err, errdefs.ErrExists) {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("fetch %s: no answer from its registry within the lazy-fetch bound: %w", d, errdefs.ErrUnavailable)
		}
		return fmt.Errorf("fetch %s: %w", d, err)
	}
	return nil
}
