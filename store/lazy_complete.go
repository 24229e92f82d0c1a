package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
)

// completeLater starts, once per rootfs id and process, the background
// completion of an image whose eStargz layers are served lazily.
func (ll *lazyLayers) completeLater(id string, il ImageLayers) {
	if !ll.complete || !ll.needsCompletion(il) {
		return
	}
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if ll.completing[id] {
		return
	}
	if ll.s.goBackground(func() { ll.completeRetrying(id, il) }) {
		ll.completing[id] = true
	}
}

// completeRetrying completes a rootfs, retrying with backoff (registry
// down) until it succeeds or the store closes.
func (ll *lazyLayers) completeRetrying(id string, il ImageLayers) {
	wait := time.Second
	for {
		err := ll.completeRootfs(ll.ctx, il)
		if err == nil {
			slog.Info("lazy image complete: rootfs now served from local files", "rootfs", id)
			return
		}
		if ll.ctx.Err() != nil {
			return
		}
		slog.Warn("lazy completion failed, retrying", "rootfs", id, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ll.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, time.Minute)
	}
}

// completeRootfs fetches what is missing of each eStargz layer, verifies
// each whole blob against its digest, commits it to the blob store, unpacks
// the image's snapshots as an eager pull would, and then switches the
// layers' files to their snapshot directories.
func (ll *lazyLayers) completeRootfs(ctx context.Context, il ImageLayers) error {
	s := ll.s
	ctx, release, err := s.HoldLease(ctx, "lazy completion "+il.Manifest.Digest.String())
	if err != nil {
		return err
	}
	defer release()
	var files []*layerFiles
	for _, l := range il.Layers {
		toc, ok := tocDigestOf(l)
		if !ok {
			files = append(files, nil)
			continue
		}
		x, err := ll.get(ctx, l, toc)
		if err != nil {
			return err
		}
		files = append(files, x)
		if _, err := s.blobs.Info(ctx, l.Digest); err == nil {
			continue
		}
		if err := x.Complete(ctx); err != nil {
			return err
		}
		if err := s.commitLazyBlob(ctx, x, l.Digest, l.Size); err != nil {
			return err
		}
	}
	if err := s.unpack(ctx, il, nil); err != nil {
		return err
	}
	sn, err := s.Snapshotter()
	if err != nil {
		return err
	}
	for i, x := range files {
		if x == nil || x.local.Load() != nil {
			continue
		}
		lowers, err := sn.Lowers(ctx, il.ChainIDs[i].String())
		if err != nil || len(lowers) == 0 {
			return fmt.Errorf("layer %s: snapshot after unpack: %w", il.Layers[i].Digest, err)
		}
		dir := filepath.Clean(lowers[0])
		x.local.Store(&dir)
		// Open handles keep reading the unlinked cache files.
		if err := os.RemoveAll(s.lazyCacheDir(il.Layers[i].Digest)); err != nil {
			slog.Warn("lazy: cannot remove a completed layer's chunk cache", "layer", il.Layers[i].Digest, "err", err)
		}
	}
	s.changed()
	return nil
}

// commitLazyBlob copies a completed layer from its chunk cache into the
// blob store, checked against its digest; a blob that does not match is
// dropped from the cache so that the next try fetches it again.
func (s *Local) commitLazyBlob(ctx context.Context, x *layerFiles, d digest.Digest, size int64) error {
	ref := "lazy-" + d.String()
	w, err := s.blobs.Writer(ctx, ref, cas.WriterOpts{Expected: d, Total: size})
	if err != nil {
		return fmt.Errorf("layer %s: %w", d, err)
	}
	defer w.Close()
	if err := w.Truncate(0); err != nil {
		return err
	}
	err = cas.Copy(ctx, w, x.Blob(), size, d)
	if err == nil || errors.Is(err, errdefs.ErrExists) {
		return nil
	}
	_ = s.blobs.Abort(context.WithoutCancel(ctx), ref)
	if errors.Is(err, errdefs.ErrFailedPrecondition) || errors.Is(err, errdefs.ErrDigestMismatch) {
		slog.Error("lazy: completed layer does not match its digest; fetching it again", "layer", d, "err", err)
		if derr := x.Discard(); derr != nil {
			return errors.Join(err, derr)
		}
	}
	return fmt.Errorf("layer %s: %w", d, err)
}

// completeAll starts the completion of every image with eStargz layers that
// are not local yet: when the mount starts (resuming after a restart, with
// the chunks already cached) and after a lazy pull through it.
func (ll *lazyLayers) completeAll() {
	views, err := ll.s.ImageViews(ll.ctx)
	if err != nil {
		slog.Warn("lazy: cannot list images to complete", "err", err)
		return
	}
	for _, v := range views {
		id := v.Layers.RootfsID()
		if id == "" {
			continue
		}
		ll.completeLater(id, v.Layers)
	}
}

// needsCompletion: some eStargz layer of il is not local, and no layer was
// pulled with completion turned off.
func (ll *lazyLayers) needsCompletion(il ImageLayers) bool {
	missing := false
	for _, l := range il.Layers {
		if _, ok := tocDigestOf(l); !ok {
			continue
		}
		if b, err := ll.s.ContentInfo(ll.ctx, l.Digest); err == nil && b.Labels[labelNoComplete] == "false" {
			return false
		}
		if _, err := ll.s.blobs.Info(ll.ctx, l.Digest); errors.Is(err, errdefs.ErrNotFound) {
			missing = true
		}
	}
	return missing
}
