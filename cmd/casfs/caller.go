package main

import (
	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/api"
	"github.com/casfs/casfs/fetch"
	"github.com/casfs/casfs/store"
)

// asCaller makes ro the caller's whole registry configuration when s is a
// daemon's socket: the daemon then logs in with the caller's docker
// credentials for each of hosts (and the mirrors configured for them) and
// reads the caller's hosts directory, never its own environment. hosts is
// called only then, and not for --user, which applies to every host.
func asCaller(c *cli.Context, s any, ro *store.RegistryOptions, hosts func() ([]string, error)) error {
	if !api.Remote(s) {
		return nil
	}
	var hs []string
	if ro.Username == "" {
		var err error
		if hs, err = hosts(); err != nil {
			return err
		}
	}
	ro.Config, ro.HostsDir = fetch.CallerConfig(c.Context, ro.Config, ro.HostsDir, ro.PlainHTTP, hs)
	return nil
}

// refHosts are the registry hosts of image references.
func refHosts(refs ...string) func() ([]string, error) {
	return func() ([]string, error) {
		var out []string
		for _, r := range refs {
			if pr, err := fetch.ParseReference(r); err == nil {
				out = append(out, pr.Host)
			}
		}
		return out, nil
	}
}

// sourceHosts are the registries the store's blobs came from: those an
// operation that fetches missing or corrupt blobs again may contact.
func sourceHosts(c *cli.Context, s any) func() ([]string, error) {
	return func() ([]string, error) {
		cs, ok := s.(store.Content)
		if !ok {
			return nil, nil
		}
		blobs, err := cs.ListContent(c.Context)
		if err != nil {
			return nil, err
		}
		return store.SourceHosts(blobs), nil
	}
}
