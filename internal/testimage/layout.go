package testimage

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// WriteLayout writes an OCI image layout in dir: oci-layout, every blob of
// blobs under blobs/<alg>/<hex>, and root in index.json named tag (the
// org.opencontainers.image.ref.name annotation). An existing index.json is
// kept, with any earlier entry of the same tag replaced.
func WriteLayout(dir string, tag string, root ocispec.Descriptor, blobs map[digest.Digest][]byte) error {
	if _, ok := blobs[root.Digest]; !ok {
		return fmt.Errorf("write layout %s: root %s is not in the blob set", dir, root.Digest)
	}
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), layout, 0o644); err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	for d, b := range blobs {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("write layout %s: %w", dir, err)
		}
		if d.Algorithm().FromBytes(b) != d {
			return fmt.Errorf("write layout %s: blob %s does not match its content", dir, d)
		}
		p := filepath.Join(dir, ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("write layout: %w", err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fmt.Errorf("write layout: %w", err)
		}
	}

	ix := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	indexPath := filepath.Join(dir, "index.json")
	if b, err := os.ReadFile(indexPath); err == nil {
		if err := json.Unmarshal(b, &ix); err != nil {
			return fmt.Errorf("write layout: existing %s: %w", indexPath, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("write layout: %w", err)
	}
	kept := []ocispec.Descriptor{}
	for _, m := range ix.Manifests {
		if tag == "" || m.Annotations[ocispec.AnnotationRefName] != tag {
			kept = append(kept, m)
		}
	}
	entry := root
	entry.Annotations = map[string]string{}
	for k, v := range root.Annotations {
		entry.Annotations[k] = v
	}
	if tag != "" {
		entry.Annotations[ocispec.AnnotationRefName] = tag
	}
	if len(entry.Annotations) == 0 {
		entry.Annotations = nil
	}
	ix.Manifests = append(kept, entry)
	sort.SliceStable(ix.Manifests, func(i, j int) bool {
		return ix.Manifests[i].Annotations[ocispec.AnnotationRefName] < ix.Manifests[j].Annotations[ocispec.AnnotationRefName]
	})
	b, err := json.Marshal(ix)
	if err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	if err := os.WriteFile(indexPath, b, 0o644); err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	return nil
}
