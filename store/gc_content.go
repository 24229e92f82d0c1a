package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

// RemoveContent removes a blob and its record, refusing (ErrInUse, naming
// them) a blob that an image reaches or a live lease holds.
func (s *Local) RemoveContent(ctx context.Context, d digest.Digest) error {
	images, leases, err := s.contentUsers(ctx, d)
	if err != nil {
		return fmt.Errorf("remove %s: %w", d, err)
	}
	var users []string
	for _, n := range images {
		users = append(users, "image "+n)
	}
	for _, id := range leases {
		users = append(users, "lease "+id)
	}
	if len(users) > 0 {
		more := ""
		if len(users) > 3 {
			more = fmt.Sprintf(" and %d more", len(users)-3)
			users = users[:3]
		}
		return blobInUse(fmt.Sprintf("remove %s: %s still need%s it (content rm --force removes it anyway)",
			d, strings.Join(users, ", ")+more, plural(len(images)+len(leases))))
	}
	return s.removeContent(ctx, d)
}

// blobInUse is errdefs.ErrInUse without its "store in use" text, which is
// about another process holding the store, not about a blob.
type blobInUse string

func (e blobInUse) Error() string { return string(e) }
func (blobInUse) Unwrap() error   { return errdefs.ErrInUse }

func plural(n int) string {
	if n == 1 {
		return "s"
	}
	return ""
}

func (s *Local) ForceRemoveContent(ctx context.Context, d digest.Digest) error {
	return s.removeContent(ctx, d)
}

// contentUsers names the images whose graph reaches d and the live leases
// that hold d itself.
func (s *Local) contentUsers(ctx context.Context, d digest.Digest) (images, leases []string, err error) {
	db, err := s.Index()
	if err != nil {
		return nil, nil, err
	}
	g := &gcGraph{now: time.Now().UTC(), blobs: map[digest.Digest]blobRec{}, snaps: map[string]index.Snapshot{}}
	var imgs []index.Image
	if err := db.Images().List(ctx, "", func(_ string, img index.Image) error {
		imgs = append(imgs, img)
		return nil
	}); err != nil {
		return nil, nil, err
	}
	for _, img := range imgs {
		m := newMarker(s, g)
		m.blob(img.Target.Digest, img.Target.MediaType)
		if err := m.run(ctx); err != nil {
			return nil, nil, err
		}
		if m.blobs[d] {
			images = append(images, img.Name)
		}
	}
	err = db.Leases().List(ctx, "", func(_ string, l index.Lease) error {
		if !g.expired(l) && slices.Contains(l.Blobs, d) {
			leases = append(leases, l.ID)
		}
		return nil
	})
	return images, leases, err
}
