package testimage

import (
	"bytes"
	"testing"
)

// TestBuildSharesCompressionNotBytes: a second build of the same layers
// gives the bytes a fresh compression gives, in slices of its own, so one
// test changing its image's blobs leaves every other build as it was.
func TestBuildSharesCompressionNotBytes(t *testing.T) {
	spec := threeLayers()
	spec.Layers = append(spec.Layers, Layer{Compression: "estargz", Files: []File{Reg("a", 0o644, "eStargz")}})
	first, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range first.Layers {
		first.Blobs[l.Digest][0] ^= 0xff // a test corrupting its copy
	}
	second, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	if first.Manifest.Digest != second.Manifest.Digest {
		t.Fatalf("manifest %s, then %s", first.Manifest.Digest, second.Manifest.Digest)
	}
	for i, l := range spec.Layers {
		raw, err := Tar(sortedFiles(l.Files))
		if err != nil {
			t.Fatal(err)
		}
		fresh, diffID, _, err := compressTar(l, raw)
		if err != nil {
			t.Fatal(err)
		}
		got := second.Blobs[second.Layers[i].Digest]
		if !bytes.Equal(got, fresh) || second.DiffIDs[i] != diffID {
			t.Errorf("layer %d (%s): the second build's blob or diff ID differs from a fresh compression", i, l.Compression)
		}
		if bytes.Equal(first.Blobs[first.Layers[i].Digest], got) {
			t.Errorf("layer %d (%s): the first build's corrupted blob shows in the second", i, l.Compression)
		}
	}
}
