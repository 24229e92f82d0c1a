package fetch

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// maxResolvers bounds the resolvers a Fetcher keeps; the least recently
// used goes first.
const maxResolvers = 16

// resolvers keeps one registryResolver per distinct registry options, so
// that the operations of a store that bring the same options share its
// token cache, its endpoints' HTTP clients (kept-alive connections, TLS
// sessions) and its parsed hosts.toml. The key covers every option,
// credentials included (hashed, never kept in clear): operations with
// different credentials never share a token.
type resolvers struct {
	mu    sync.Mutex
	byKey map[[sha256.Size]byte]*resolverEntry
	clock uint64
}

type resolverEntry struct {
	r    *registryResolver
	used uint64
}

// get returns the resolver for opts, made on first use. A kept one first
// forgets the hosts whose hosts.toml folder changed since it read them, so
// an edit is seen by the next operation, as it was when every operation
// made its own resolver.
func (c *resolvers) get(opts registryOptions) (*registryResolver, error) {
	b, err := json.Marshal(opts)
	if err != nil {
		return nil, fmt.Errorf("registry options: %w", err)
	}
	key := sha256.Sum256(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock++
	if e, ok := c.byKey[key]; ok {
		e.used = c.clock
		e.r.forgetChangedHosts()
		return e.r, nil
	}
	r, err := newResolver(opts)
	if err != nil {
		return nil, err
	}
	if c.byKey == nil {
		c.byKey = map[[sha256.Size]byte]*resolverEntry{}
	}
	if len(c.byKey) >= maxResolvers {
		var oldest [sha256.Size]byte
		var least uint64
		for k, e := range c.byKey {
			if least == 0 || e.used < least {
				oldest, least = k, e.used
			}
		}
		c.byKey[oldest].r.closeIdle()
		delete(c.byKey, oldest)
	}
	c.byKey[key] = &resolverEntry{r: r, used: c.clock}
	return r, nil
}

// hostsStamp names what loadEndpoints reads for host: the folder it picks
// and the name, size and time of every file in it. Equal stamps mean the
// same endpoints.
func hostsStamp(dir, host string) string {
	if dir == "" {
		dir = defaultHostsDir()
	}
	hostDir, _, err := findHostDir(dir, host)
	if err != nil || hostDir == "" {
		return dir + "\x00" + fmt.Sprint(err)
	}
	var b strings.Builder
	b.WriteString(hostDir)
	entries, err := os.ReadDir(hostDir)
	if err != nil {
		fmt.Fprintf(&b, "\x00%v", err)
	}
	for _, de := range entries {
		fi, err := os.Stat(filepath.Join(hostDir, de.Name())) // follows links to certificates
		if err != nil {
			fmt.Fprintf(&b, "\x00%s:%v", de.Name(), err)
			continue
		}
		fmt.Fprintf(&b, "\x00%s:%d:%d", de.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}
