package serve

import (
	"encoding/json"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// manifestTypes are the documents the manifests route serves.
var manifestTypes = map[string]bool{
	ocispec.MediaTypeImageManifest:                              true,
	ocispec.MediaTypeImageIndex:                                 true,
	"application/vnd.docker.distribution.manifest.v2+json":      true,
	"application/vnd.docker.distribution.manifest.list.v2+json": true,
}

func isManifestType(mt string) bool { return manifestTypes[mt] }

// document is the part of a manifest or index the server looks at.
type document struct {
	MediaType    string              `json:"mediaType"`
	ArtifactType string              `json:"artifactType"`
	Config       *ocispec.Descriptor `json:"config"`
	Manifests    json.RawMessage     `json:"manifests"`
	Subject      *ocispec.Descriptor `json:"subject"`
	Annotations  map[string]string   `json:"annotations"`
}

// documentMediaType is a document's own media type, else its shape's
// ("" when it is neither a manifest nor an index).
func documentMediaType(b []byte) string {
	var doc document
	if json.Unmarshal(b, &doc) != nil {
		return ""
	}
	switch {
	case doc.MediaType != "":
		return doc.MediaType
	case doc.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case doc.Config != nil:
		return ocispec.MediaTypeImageManifest
	}
	return ""
}

// referrer returns the referrers-API descriptor of document b (digest d,
// media type mt) when its subject is subject.
func referrer(b []byte, d digest.Digest, mt string, subject digest.Digest) (ocispec.Descriptor, bool) {
	var doc document
	if json.Unmarshal(b, &doc) != nil || doc.Subject == nil || doc.Subject.Digest != subject {
		return ocispec.Descriptor{}, false
	}
	at := doc.ArtifactType
	if at == "" && doc.Config != nil {
		at = doc.Config.MediaType
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b)), ArtifactType: at, Annotations: doc.Annotations}, true
}
