package serve

import (
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/oci"
)

// isManifestType: the documents the manifests route serves.
func isManifestType(mt string) bool { return oci.IsIndex(mt) || oci.IsManifest(mt) }

// referrer returns the referrers-API descriptor of document b (digest d,
// media type mt) when its subject is subject.
func referrer(b []byte, d digest.Digest, mt string, subject digest.Digest) (ocispec.Descriptor, bool) {
	doc, err := oci.Parse(ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}, b)
	if err != nil {
		return ocispec.Descriptor{}, false
	}
	var subj *ocispec.Descriptor
	var at string
	var ann map[string]string
	switch {
	case doc.Index != nil:
		subj, at, ann = doc.Index.Subject, doc.Index.ArtifactType, doc.Index.Annotations
	case doc.Manifest != nil:
		subj, at, ann = doc.Manifest.Subject, doc.Manifest.ArtifactType, doc.Manifest.Annotations
		if at == "" {
			at = doc.Manifest.Config.MediaType
		}
	}
	if subj == nil || subj.Digest != subject {
		return ocispec.Descriptor{}, false
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b)), ArtifactType: at, Annotations: ann}, true
}
