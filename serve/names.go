package serve

import (
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// nameRE is the distribution spec's repository name grammar.
var nameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

// repository is the images of one host/path.
type repository struct {
	host, path string
	tags       map[string]ocispec.Descriptor
	roots      []ocispec.Descriptor // every target, tagged or pinned by digest
	updated    time.Time
}

// catalogue groups image records by path, then host.
type catalogue map[string]map[string]*repository

func newCatalogue(imgs []Image) catalogue {
	c := catalogue{}
	for _, img := range imgs {
		named, err := reference.ParseNormalizedNamed(img.Name)
		if err != nil {
			continue // not a name a registry could serve
		}
		host, path := reference.Domain(named), reference.Path(named)
		hosts := c[path]
		if hosts == nil {
			hosts = map[string]*repository{}
			c[path] = hosts
		}
		r := hosts[host]
		if r == nil {
			r = &repository{host: host, path: path, tags: map[string]ocispec.Descriptor{}}
			hosts[host] = r
		}
		if t, ok := named.(reference.Tagged); ok {
			r.tags[t.Tag()] = img.Target
		}
		r.roots = append(r.roots, img.Target)
		if img.Updated.After(r.updated) {
			r.updated = img.Updated
		}
	}
	return c
}

// lookup applies the names rule: with ns, the repository pulled from that
// host; without, the most recently pulled repository of that path.
func (c catalogue) lookup(name, ns string) *repository {
	hosts := c[name]
	if ns != "" {
		return hosts[normalizeHost(ns)]
	}
	var best *repository
	for _, r := range hosts {
		if best == nil || r.updated.After(best.updated) || (r.updated.Equal(best.updated) && r.host < best.host) {
			best = r
		}
	}
	return best
}

// names lists the repository names a client can ask for: with ns, the
// paths pulled from that host; without, every path.
func (c catalogue) names(ns string) []string {
	var out []string
	for path, hosts := range c {
		if ns == "" || hosts[normalizeHost(ns)] != nil {
			out = append(out, path)
		}
	}
	sort.Strings(out)
	return out
}

func (r *repository) tagList() []string {
	out := make([]string, 0, len(r.tags))
	for t := range r.tags {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// normalizeHost maps Docker Hub's other host names to the one image names
// are recorded under.
func normalizeHost(h string) string {
	switch h = strings.ToLower(h); h {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return h
}

// page applies the spec's n and last to a sorted list: the entries after
// last, at most n of them (n < 0: all). more says whether any were cut.
func page(all []string, n int, last string) (out []string, more bool) {
	i := 0
	if last != "" {
		i = sort.SearchStrings(all, last)
		if i < len(all) && all[i] == last {
			i++
		}
	}
	out = all[i:]
	if n >= 0 && len(out) > n {
		return out[:n], true
	}
	return out, false
}
