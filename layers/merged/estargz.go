package merged

import "github.com/containerd/stargz-snapshotter/estargz"

// eStargz metadata entries at a layer's root: part of the tar stream, not
// of the image's tree, whether the layer is read lazily or unpacked.
var metadataNames = map[string]bool{
	estargz.TOCTarName:         true,
	estargz.PrefetchLandmark:   true,
	estargz.NoPrefetchLandmark: true,
}

// IsEStargzMetadata reports whether a layer path (relative, cleaned) is one
// of the eStargz metadata entries that no rootfs shows.
func IsEStargzMetadata(p string) bool { return metadataNames[p] }

// DirSize is the size an eStargz layer's directories show: what a
// directory of an unpacked layer shows on ext4, so that a tree looks the
// same whichever way its layers arrived.
const DirSize = 4096
