package store

import (
	"github.com/casfs/casfs/fetch"
	"github.com/casfs/casfs/index"
)

// keepCaller remembers, in memory only and for the daemon's lifetime, the
// registry options a lazy pull of ref came with (through the socket: the
// caller's configuration and credentials), so that the image's later
// chunk reads, whole-blob fetches and background completion, which run
// with no caller present, log in as that caller did. Nothing of it is
// written to disk or logged; after a restart the daemon's own registry
// options apply again.
func (ll *lazyLayers) keepCaller(ref string, ro RegistryOptions) {
	pr, err := fetch.ParseReference(ref)
	if err != nil {
		return
	}
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if ll.callers == nil {
		ll.callers = map[fetch.Source]RegistryOptions{}
	}
	ll.callers[fetch.Source{Host: pr.Host, Repo: pr.Repo}] = ro
}

// registryFor returns the options to fetch blob b with when ro are the
// daemon's own: a caller's kept for one of b's sources win. Options a
// caller sent with the operation at hand (a caller's config or --user)
// are kept as they are.
func (s *Local) registryFor(b index.Blob, ro RegistryOptions) RegistryOptions {
	ll := s.lazyLayers
	if ll == nil || ro.fromCaller() {
		return ro
	}
	ll.mu.Lock()
	defer ll.mu.Unlock()
	for _, src := range sourcesOf(b) {
		if kept, ok := ll.callers[src]; ok {
			return kept
		}
	}
	return ro
}

// fromCaller tells options a command sent with its request (its whole
// configuration, or --user) from a daemon's own.
func (ro RegistryOptions) fromCaller() bool {
	return ro.Username != "" || (ro.Config != nil && ro.Config.Caller)
}
