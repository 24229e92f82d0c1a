package store

import (
	"testing"

	"github.com/casfs/casfs/fetch"
	"github.com/casfs/casfs/index"
)

// TestRegistryForKeptCaller: a blob of a repository pulled lazily through
// the socket is fetched later with the options that pull came with; the
// daemon's own apply to other repositories, and options a caller sends with
// the operation at hand win over kept ones.
func TestRegistryForKeptCaller(t *testing.T) {
	s := &Local{lazyLayers: &lazyLayers{}}
	daemon := RegistryOptions{HostsDir: "/daemon/certs.d"}
	caller := RegistryOptions{HostsDir: "/caller/certs.d", Config: &fetch.RegistryConfig{Caller: true}}
	s.lazyLayers.keepCaller("reg.example:5000/lab/app:1", caller)

	blob := func(host, repos string) index.Blob {
		return index.Blob{Labels: map[string]string{labelSourcePrefix + host: repos}}
	}
	for _, tc := range []struct {
		name string
		b    index.Blob
		ro   RegistryOptions
		want string
	}{
		{"kept source", blob("reg.example:5000", "lab/other,lab/app"), daemon, "/caller/certs.d"},
		{"other repository", blob("reg.example:5000", "lab/other"), daemon, "/daemon/certs.d"},
		{"other registry", blob("elsewhere.example", "lab/app"), daemon, "/daemon/certs.d"},
		{"caller at hand", blob("reg.example:5000", "lab/app"), RegistryOptions{HostsDir: "/now", Username: "u"}, "/now"},
	} {
		if got := s.registryFor(tc.b, tc.ro).HostsDir; got != tc.want {
			t.Errorf("%s: hosts dir %q, want %q", tc.name, got, tc.want)
		}
	}
	// Without a daemon's lazy layers nothing is kept.
	if got := (&Local{}).registryFor(blob("reg.example:5000", "lab/app"), daemon).HostsDir; got != "/daemon/certs.d" {
		t.Errorf("embedded store: hosts dir %q", got)
	}
}
