package oci

import (
	"encoding/json"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
)

// Document is a parsed index or manifest.
type Document struct {
	// Desc is the document's descriptor, its media type filled in from the
	// document itself when the descriptor did not say.
	Desc     ocispec.Descriptor
	Index    *ocispec.Index    // set for an index
	Manifest *ocispec.Manifest // set for a manifest
}

// CheckDocumentType refuses a media type that is neither an index nor a
// manifest, saying why.
func CheckDocumentType(desc ocispec.Descriptor) error {
	switch {
	case IsIndex(desc.MediaType), IsManifest(desc.MediaType):
		return nil
	case isSchema1(desc.MediaType):
		return fmt.Errorf("%s: schema1 manifests are not supported (deprecated); repush the image with a current client: %w", desc.Digest, errdefs.ErrNotImplemented)
	}
	return fmt.Errorf("%s: unsupported manifest media type %q: %w", desc.Digest, desc.MediaType, errdefs.ErrNotImplemented)
}

// Parse reads data, the bytes of desc, as an index or a manifest, and checks
// that every descriptor in it is well formed.
func Parse(desc ocispec.Descriptor, data []byte) (Document, error) {
	if desc.MediaType == "" {
		desc.MediaType = Sniff(data)
	}
	if err := CheckDocumentType(desc); err != nil {
		return Document{}, err
	}
	doc := Document{Desc: desc}
	kind := "manifest"
	var v any
	if IsIndex(desc.MediaType) {
		kind, doc.Index = "index", &ocispec.Index{}
		v = doc.Index
	} else {
		doc.Manifest = &ocispec.Manifest{}
		v = doc.Manifest
	}
	if err := json.Unmarshal(data, v); err != nil {
		return Document{}, fmt.Errorf("%s %s is not valid JSON: %v: %w", kind, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	for _, c := range doc.Children() {
		if err := c.Digest.Validate(); err != nil || c.Size < 0 {
			return Document{}, fmt.Errorf("%s %s: bad descriptor %q size %d: %w", kind, desc.Digest, c.Digest, c.Size, errdefs.ErrInvalidArgument)
		}
	}
	return doc, nil
}

// Children are the descriptors the document points at: an index's
// manifests, or a manifest's config then layers; the subject, when there is
// one, comes last.
func (d Document) Children() []ocispec.Descriptor {
	var out []ocispec.Descriptor
	var subject *ocispec.Descriptor
	switch {
	case d.Index != nil:
		out = append(out, d.Index.Manifests...)
		subject = d.Index.Subject
	case d.Manifest != nil:
		out = append(append(out, d.Manifest.Config), d.Manifest.Layers...)
		subject = d.Manifest.Subject
	}
	if subject != nil {
		out = append(out, *subject)
	}
	return out
}

// Parts are what the document is made of: Children without the subject,
// which the document refers to but does not contain.
func (d Document) Parts() []ocispec.Descriptor {
	c := d.Children()
	if (d.Index != nil && d.Index.Subject != nil) || (d.Manifest != nil && d.Manifest.Subject != nil) {
		c = c[:len(c)-1]
	}
	return c
}

// Children parses data, the bytes of desc, and returns its children (see
// Document.Children); a descriptor that is not an index or a manifest has
// none.
func Children(desc ocispec.Descriptor, data []byte) ([]ocispec.Descriptor, error) {
	if !IsIndex(desc.MediaType) && !IsManifest(desc.MediaType) {
		return nil, nil
	}
	doc, err := Parse(desc, data)
	if err != nil {
		return nil, err
	}
	return doc.Children(), nil
}
