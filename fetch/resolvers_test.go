package fetch

import (
	"context"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/testenv"
)

// Operations of one store that bring the same registry options share a
// resolver, so the second asks the token realm nothing; other credentials
// get their own resolver and their own token.
func TestResolverSharedByOperationsWithSameOptions(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "shared", 1, linuxAMD64, false)
	pushImage(t, reg, "sec/shared", "1", img)
	gate := testenv.StartTokenGate(t, reg)
	gate.UseRealm(false)
	ref := gate.Host + "/sec/shared:1"

	ts := newTestStore(t)
	hosts := t.TempDir()
	resolve := func(user, pass string) *registryResolver {
		t.Helper()
		r := ts.op(t, Options{HostsDir: hosts, PlainHTTP: true, Timeout: 5 * time.Second, Username: user, Password: pass}).Resolver(t)
		_, desc, err := r.Resolve(context.Background(), ref)
		if err != nil {
			t.Fatalf("resolve as %q: %v", user, err)
		}
		if desc.Digest != img.Manifest.Digest {
			t.Fatalf("resolve as %q: digest %s, want %s", user, desc.Digest, img.Manifest.Digest)
		}
		return r
	}
	hits := func() int { n, _ := gate.SameHost.Seen(); return n }

	first := resolve("", "")
	afterFirst := hits()
	if afterFirst == 0 {
		t.Fatal("the first resolve asked the token realm nothing: the gate is not in the way")
	}
	if again := resolve("", ""); again != first {
		t.Error("an operation with the same options got another resolver")
	}
	if n := hits(); n != afterFirst {
		t.Errorf("the second operation asked the realm %d more times, want its cached token reused", n-afterFirst)
	}

	alice := resolve("alice", "s3cret")
	if alice == first {
		t.Fatal("an operation with other credentials got the anonymous resolver")
	}
	afterAlice := hits()
	if afterAlice == afterFirst {
		t.Error("other credentials reused the anonymous token")
	}
	if _, auths := gate.SameHost.Seen(); len(auths) == 0 {
		t.Error("alice's token request carried no credentials")
	}
	if resolve("alice", "s3cret") != alice || hits() != afterAlice {
		t.Error("alice's second operation did not reuse her resolver and token")
	}
	if resolve("alice", "other") == alice {
		t.Error("another password got alice's resolver")
	}
}

// A kept resolver sees an edited hosts.toml at the next operation, as a
// resolver made per operation did.
func TestResolverReloadsEditedHostsToml(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	hosts := t.TempDir()
	writeHostsToml(t, hosts, "reg.example", `server = "https://a.example"`+"\n")
	opts := Options{HostsDir: hosts}
	server := func(r *registryResolver) string {
		t.Helper()
		eps, err := r.Endpoints("reg.example")
		if err != nil {
			t.Fatal(err)
		}
		return eps[len(eps)-1].URL.Host
	}
	first := ts.op(t, opts).Resolver(t)
	if got := server(first); got != "a.example" {
		t.Fatalf("server %q, want a.example", got)
	}
	if got := server(ts.op(t, opts).Resolver(t)); got != "a.example" {
		t.Fatalf("unchanged hosts.toml: server %q, want a.example", got)
	}
	writeHostsToml(t, hosts, "reg.example", `server = "https://other.example"`+"\n")
	next := ts.op(t, opts).Resolver(t)
	if next != first {
		t.Error("the same options got another resolver")
	}
	if got := server(next); got != "other.example" {
		t.Fatalf("after the edit: server %q, want other.example", got)
	}
}

// The Fetcher keeps a bounded number of resolvers, dropping the least
// recently used.
func TestResolversBounded(t *testing.T) {
	t.Parallel()
	var c resolvers
	keep, err := c.get(registryOptions{HostsDir: "keep"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxResolvers + 3 {
		if _, err := c.get(registryOptions{HostsDir: "keep"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.get(registryOptions{HostsDir: t.TempDir(), Timeout: time.Duration(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.byKey) != maxResolvers {
		t.Errorf("%d resolvers kept, want %d", len(c.byKey), maxResolvers)
	}
	if again, _ := c.get(registryOptions{HostsDir: "keep"}); again != keep {
		t.Error("the resolver used all along was dropped")
	}
}
