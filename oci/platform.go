package oci

import (
	"fmt"
	"strings"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
)

// HostPlatform is the platform of this machine, normalised as containerd
// does (arm64 without its default v8 variant).
func HostPlatform() ocispec.Platform { return platforms.Normalize(platforms.DefaultSpec()) }

// ParsePlatform reads "os/arch[/variant]", normalised; "" means host.
func ParsePlatform(s string, host ocispec.Platform) (ocispec.Platform, error) {
	if s == "" {
		return platforms.Normalize(host), nil
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]: %w", s, errdefs.ErrInvalidArgument)
	}
	p, err := platforms.Parse(s)
	if err != nil {
		return ocispec.Platform{}, fmt.Errorf("platform %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return platforms.Normalize(p), nil
}

// FormatPlatform is "os/arch[/variant]", or "" for none.
func FormatPlatform(p *ocispec.Platform) string {
	if p == nil || p.OS == "" && p.Architecture == "" {
		return ""
	}
	return platforms.Format(*p)
}

// Platform chooses among the manifests of an index for one platform, by
// containerd's rules: an arm64 machine runs arm64 manifests with or without
// the v8 variant, and prefers the closest variant when several match.
type Platform struct {
	p ocispec.Platform
	m platforms.MatchComparer
}

// NewPlatform matches p and what p runs.
func NewPlatform(p ocispec.Platform) Platform {
	return Platform{p: platforms.Normalize(p), m: platforms.Only(p)}
}

// String is the platform's "os/arch[/variant]".
func (pl Platform) String() string { return platforms.Format(pl.p) }

// Spec is the platform itself.
func (pl Platform) Spec() ocispec.Platform { return pl.p }

// Match tells whether a manifest for p runs on the platform. An entry that
// names no platform matches nothing.
func (pl Platform) Match(p *ocispec.Platform) bool {
	return p != nil && pl.m != nil && pl.m.Match(*p)
}

// Best returns the index of the entry of descs that suits the platform
// best (the first of equals), or -1 when none matches. Nested indexes are
// not considered: they are walked, not chosen.
func (pl Platform) Best(descs []ocispec.Descriptor) int {
	best := -1
	for i, d := range descs {
		if IsIndex(d.MediaType) || !pl.Match(d.Platform) {
			continue
		}
		if best < 0 || pl.m.Less(*d.Platform, *descs[best].Platform) {
			best = i
		}
	}
	return best
}

// Select keeps of an index's entries the nested indexes and the manifest
// that suits the platform best, as docker keeps one image per platform.
func (pl Platform) Select(descs []ocispec.Descriptor) []ocispec.Descriptor {
	var out []ocispec.Descriptor
	best := pl.Best(descs)
	for i, d := range descs {
		if IsIndex(d.MediaType) || i == best {
			out = append(out, d)
		}
	}
	return out
}
