package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/layers"
	"github.com/casfs/casfs/oci"
)

// Labels of image-mount leases (see snapshots_mount.go) that name the
// snapshots the mount shows.
var mountSnapshotLabels = []string{labelMountSnapshot, labelMountWritable}

// blobRec is what marking needs of a blob record.
type blobRec struct {
	mediaType string
	updatedAt time.Time
	size      int64
	root      bool            // labelled containerd.io/gc.root
	refs      []digest.Digest // from containerd.io/gc.ref.content.* labels
}

// gcGraph is everything a collection decides from, read at one moment:
// records from one index transaction, then the blob files and ingests.
type gcGraph struct {
	now     time.Time
	images  []index.Image
	leases  []index.Lease
	blobs   map[digest.Digest]blobRec
	files   map[digest.Digest]int64 // blob files on disk, with their sizes
	snaps   map[string]index.Snapshot
	ingests []digest.Digest // expected digests of ingests in progress
}

func (s *Local) loadGraph(ctx context.Context) (*gcGraph, error) {
	db, err := s.Index()
	if err != nil {
		return nil, err
	}
	g := &gcGraph{now: time.Now().UTC(), blobs: map[digest.Digest]blobRec{}, files: map[digest.Digest]int64{}, snaps: map[string]index.Snapshot{}}
	err = db.View(ctx, func(tx *index.Tx) error {
		if err := index.TxTable(tx, db.Images()).List("", func(_ string, v index.Image) error {
			g.images = append(g.images, v)
			return nil
		}); err != nil {
			return err
		}
		if err := index.TxTable(tx, db.Leases()).List("", func(_ string, v index.Lease) error {
			g.leases = append(g.leases, v)
			return nil
		}); err != nil {
			return err
		}
		if err := index.TxTable(tx, db.Snapshots()).List("", func(k string, v index.Snapshot) error {
			g.snaps[k] = v
			return nil
		}); err != nil {
			return err
		}
		return index.TxTable(tx, db.Blobs()).List("", func(_ string, b index.Blob) error {
			r := blobRec{mediaType: b.MediaType, updatedAt: b.UpdatedAt, size: b.Size}
			for k, v := range b.Labels {
				switch {
				case k == index.LabelGCRoot:
					r.root = true
				case strings.HasPrefix(k, index.LabelGCRefContent):
					if d, err := digest.Parse(v); err == nil {
						r.refs = append(r.refs, d)
					}
				}
			}
			g.blobs[b.Digest] = r
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("garbage collection: read records: %w", err)
	}
	if err := s.blobs.Walk(ctx, func(fi cas.Info) error {
		g.files[fi.Digest] = fi.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("garbage collection: %w", err)
	}
	sts, err := s.blobs.ListStatuses(ctx)
	if err != nil {
		return nil, fmt.Errorf("garbage collection: list ingests: %w", err)
	}
	for _, st := range sts {
		if st.Expected != "" {
			g.ingests = append(g.ingests, st.Expected)
		}
	}
	return g, nil
}

func (g *gcGraph) expired(l index.Lease) bool {
	return !l.Expires.IsZero() && !l.Expires.After(g.now)
}

// marker computes what roots reach. Documents are read only for blobs
// reached as an index or a manifest (by the descriptor's media type, else
// the record's), and each at most once: marking is linear in what is kept.
type marker struct {
	s     *Local
	g     *gcGraph
	blobs map[digest.Digest]bool
	snaps map[string]bool
	queue []ocispec.Descriptor
	// types, when not nil, receives the media type each blob was reached as.
	types map[digest.Digest]string
}

func newMarker(s *Local, g *gcGraph) *marker {
	return &marker{s: s, g: g, blobs: map[digest.Digest]bool{}, snaps: map[string]bool{}}
}

func (m *marker) blob(d digest.Digest, mediaType string) {
	if d != "" && !m.blobs[d] {
		m.queue = append(m.queue, ocispec.Descriptor{Digest: d, MediaType: mediaType})
	}
}

// snapshot marks key and its parents.
func (m *marker) snapshot(key string) {
	for k := key; k != "" && !m.snaps[k]; k = m.g.snaps[k].Parent {
		m.snaps[k] = true
	}
}

// roots queues every root but the images in exclude.
func (m *marker) roots(exclude map[string]bool) {
	for _, img := range m.g.images {
		if !exclude[img.Name] {
			m.blob(img.Target.Digest, img.Target.MediaType)
		}
	}
	for _, l := range m.g.leases {
		if m.g.expired(l) {
			continue
		}
		for _, d := range l.Blobs {
			m.blob(d, "")
		}
		for _, k := range l.Snapshots {
			m.snapshot(k)
		}
		for _, lab := range mountSnapshotLabels {
			m.snapshot(l.Labels[lab])
		}
	}
	for d, r := range m.g.blobs {
		if r.root {
			m.blob(d, "")
		}
	}
	for k, sn := range m.g.snaps {
		if sn.Kind != index.SnapshotCommitted || sn.Labels[index.LabelGCRoot] != "" {
			m.snapshot(k)
		}
	}
	for _, d := range m.g.ingests {
		m.blobs[d] = true // nothing to descend into yet
	}
}

// run marks everything the queued blobs reach.
func (m *marker) run(ctx context.Context) error {
	for len(m.queue) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		desc := m.queue[len(m.queue)-1]
		m.queue = m.queue[:len(m.queue)-1]
		if m.blobs[desc.Digest] {
			continue
		}
		m.blobs[desc.Digest] = true
		rec := m.g.blobs[desc.Digest]
		for _, r := range rec.refs {
			m.blob(r, "")
		}
		mt := desc.MediaType
		if mt == "" {
			mt = rec.mediaType
		}
		if m.types != nil {
			m.types[desc.Digest] = mt
		}
		if err := m.children(ctx, desc.Digest, mt); err != nil {
			return err
		}
	}
	return nil
}

// children queues what an index or manifest refers to. A document that is
// not on disk reaches nothing local (a platform not pulled); one that is
// there but cannot be read stops the collection rather than guess.
func (m *marker) children(ctx context.Context, d digest.Digest, mediaType string) error {
	if !oci.IsIndex(mediaType) && !oci.IsManifest(mediaType) {
		return nil
	}
	var data []byte
	if ok, err := m.read(ctx, d, &data); !ok {
		return err
	}
	doc, err := oci.Parse(ocispec.Descriptor{MediaType: mediaType, Digest: d}, data)
	if err != nil {
		return fmt.Errorf("garbage collection: cannot read %s, so cannot tell what it keeps (remove it, or the image that needs it, first): %w", d, err)
	}
	for _, c := range doc.Children() {
		m.blob(c.Digest, c.MediaType)
	}
	if doc.Manifest == nil || !oci.IsConfig(doc.Manifest.Config.MediaType) {
		return nil // an index, or an artifact: no layers to unpack
	}
	var cfg ocispec.Image
	if ok, err := m.read(ctx, doc.Manifest.Config.Digest, &cfg); !ok {
		return err
	}
	for _, c := range layers.ChainIDs(cfg.RootFS.DiffIDs) {
		m.snapshot(c.String())
	}
	return nil
}

// read reads document d into v (a *[]byte takes the bytes as they are).
func (m *marker) read(ctx context.Context, d digest.Digest, v any) (bool, error) {
	if m.g.files != nil {
		if _, ok := m.g.files[d]; !ok {
			return false, nil
		}
	}
	raw, isRaw := v.(*[]byte)
	if isRaw {
		v = nil
	}
	b, err := m.s.readDocument(ctx, d, v)
	if isRaw {
		*raw = b
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("garbage collection: cannot read %s, so cannot tell what it keeps (remove it, or the image that needs it, first): %w", d, err)
	}
	return true, nil
}
