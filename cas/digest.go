package cas

import (
	"fmt"

	"github.com/casfs/casfs/errdefs"
	"github.com/opencontainers/go-digest"
)

// maxRefLen bounds an ingest ref; refs are stored hashed, so the bound is
// about keeping the ref file and error messages reasonable, not paths.
const maxRefLen = 1024

// checkDigest accepts only well-formed sha256 digests: the blob path is
// built from the hex part, so anything else must never reach the disk.
func checkDigest(dgst digest.Digest) error {
	if dgst == "" {
		return fmt.Errorf("digest is empty: %w", errdefs.ErrInvalidArgument)
	}
	if !digestHasSHA256Prefix(dgst) {
		return fmt.Errorf("digest %q: only sha256 is supported: %w", truncate(string(dgst)), errdefs.ErrInvalidArgument)
	}
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("digest %q is malformed (%v): %w", truncate(string(dgst)), err, errdefs.ErrInvalidArgument)
	}
	return nil
}

func digestHasSHA256Prefix(dgst digest.Digest) bool {
	const p = "sha256:"
	return len(dgst) >= len(p) && string(dgst[:len(p)]) == p
}

func checkRef(ref string) error {
	if ref == "" {
		return fmt.Errorf("ingest ref is empty: %w", errdefs.ErrInvalidArgument)
	}
	if len(ref) > maxRefLen {
		return fmt.Errorf("ingest ref %q is %d bytes, longer than %d: %w", truncate(ref), len(ref), maxRefLen, errdefs.ErrInvalidArgument)
	}
	return nil
}

// truncate keeps hostile input from flooding an error message.
func truncate(s string) string {
	const n = 100
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
