package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// Reference is a parsed, docker-normalised image reference.
type Reference struct {
	Name   string        // docker.io/library/nginx:alpine (tag and/or digest kept)
	Host   string        // docker.io
	Repo   string        // library/nginx
	Tag    string        // "" when only a digest was given
	Digest digest.Digest // "" when only a tag was given
}

// Object is what to ask the registry for: the digest when known, else the tag.
func (r Reference) Object() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// ParseReference normalises ref the way docker does: nginx:alpine becomes
// docker.io/library/nginx:alpine, a missing tag becomes latest.
func ParseReference(ref string) (Reference, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return Reference{}, fmt.Errorf("reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	named = reference.TagNameOnly(named)
	r := Reference{Name: named.String(), Host: reference.Domain(named), Repo: reference.Path(named)}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.Digest = d.Digest()
		if err := r.Digest.Validate(); err != nil {
			return Reference{}, fmt.Errorf("reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
		}
	}
	return r, nil
}

// registryOptions say how to reach registries.
type registryOptions struct {
	HostsDir  string
	PlainHTTP bool
	// Username and Password, when set, are used for every registry instead
	// of docker's config.json.
	Username, Password string
	// Timeout bounds dialing, TLS handshakes and response headers;
	// default 30 s.
	Timeout time.Duration
	// Deadlines, where set, win over hosts.toml's read deadlines.
	Deadlines ReadDeadlines
	// TLS, where set, wins over hosts.toml's TLS settings.
	TLS TLSOptions
	// Config is config.toml's registry section: its credentials come
	// after Username and Password, before docker's config.json.
	Config *RegistryConfig
}

// registryResolver turns references into descriptors and hands out oras
// repositories for a namespace's endpoints.
type registryResolver struct {
	opts       registryOptions
	credential auth.CredentialFunc
	cache      auth.Cache

	mu        sync.Mutex
	endpoints map[string][]hostEndpoint
	stamps    map[string]string // hostsStamp of each host in endpoints
}

// newResolver reads no files yet: hosts.toml is read on first use of a
// host, and docker's config.json when a registry asks for credentials.
func newResolver(opts registryOptions) (*registryResolver, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	r := &registryResolver{opts: opts, cache: auth.NewCache(), endpoints: map[string][]hostEndpoint{}, stamps: map[string]string{}}
	if opts.Username != "" || opts.Password != "" {
		cred := auth.Credential{Username: opts.Username, Password: opts.Password}
		r.credential = func(context.Context, string) (auth.Credential, error) { return cred, nil }
	} else {
		r.credential = configCredential(opts.Config, dockerCredential())
	}
	return r, nil
}

// dockerCredential reads docker's config.json ($DOCKER_CONFIG or
// ~/.docker) and its credential helpers, at the time a registry asks.
func dockerCredential() auth.CredentialFunc {
	return func(ctx context.Context, hostport string) (auth.Credential, error) {
		store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
		if err != nil {
			slog.Debug("docker credentials unavailable", "err", err)
			return auth.EmptyCredential, nil
		}
		return credentials.Credential(store)(ctx, hostport)
	}
}

// Endpoints returns the namespace's endpoints in the order to try them.
func (r *registryResolver) Endpoints(host string) ([]hostEndpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if eps, ok := r.endpoints[host]; ok {
		return eps, nil
	}
	stamp := hostsStamp(r.opts.HostsDir, host)
	eps, err := loadEndpoints(r.opts.HostsDir, host, hostsOptions{PlainHTTP: r.opts.PlainHTTP, Timeout: r.opts.Timeout, Deadlines: r.opts.Deadlines, TLS: r.opts.TLS, Config: r.opts.Config})
	if err != nil {
		return nil, err
	}
	r.endpoints[host] = eps
	r.stamps[host] = stamp
	return eps, nil
}

// forgetChangedHosts drops the endpoints of every host whose hosts.toml
// folder changed since they were loaded; the next use loads them again.
func (r *registryResolver) forgetChangedHosts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for host, stamp := range r.stamps {
		if hostsStamp(r.opts.HostsDir, host) != stamp {
			closeIdle(r.endpoints[host])
			delete(r.endpoints, host)
			delete(r.stamps, host)
		}
	}
}

// closeIdle closes the kept-alive connections of every endpoint loaded.
func (r *registryResolver) closeIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, eps := range r.endpoints {
		closeIdle(eps)
	}
}

func closeIdle(eps []hostEndpoint) {
	for _, ep := range eps {
		ep.Client.CloseIdleConnections()
	}
}

// endpointsWith filters the namespace's endpoints by capability.
func (r *registryResolver) endpointsWith(host string, c capabilitySet) ([]hostEndpoint, error) {
	eps, err := r.Endpoints(host)
	if err != nil {
		return nil, err
	}
	var out []hostEndpoint
	for _, ep := range eps {
		if ep.Capabilities.Has(c) {
			out = append(out, ep)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no endpoint in hosts.toml has the %s capability: %w", host, c, errdefs.ErrFailedPrecondition)
	}
	return out, nil
}

// AuthClient is the endpoint's client with oras's token handling and our
// credentials. Credentials never travel in clear text to another host:
// a token realm over plain HTTP elsewhere than the registry's own
// host:port fails the request (see credentialGuard).
func (r *registryResolver) AuthClient(ep hostEndpoint) *auth.Client {
	return &auth.Client{
		Client:     guardCredentials(ep.Client, ep.URL.Host),
		Header:     nil,
		Cache:      r.cache,
		Credential: r.credential,
		// Loopback token realms are normal for test and in-cluster registries.
		BlockedRealmPrefixes: []netip.Prefix{},
	}
}

// Repository returns an oras repository for repo on the endpoint.
func (r *registryResolver) Repository(ep hostEndpoint, repo string) *remote.Repository {
	return &remote.Repository{
		Client:             r.AuthClient(ep),
		Reference:          registry.Reference{Registry: ep.URL.Host, Repository: repo},
		PlainHTTP:          ep.PlainHTTP(),
		ManifestMediaTypes: oci.ManifestAccept(),
	}
}

// Resolve normalises ref and asks the endpoints with the resolve
// capability, in order, for its descriptor. A mirror's failure falls back
// to the next endpoint; the server's "manifest unknown" is final.
func (r *registryResolver) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	pr, err := ParseReference(ref)
	if err != nil {
		return "", ocispec.Descriptor{}, err
	}
	desc, _, err := r.resolve(ctx, pr, -1)
	if err != nil {
		return "", ocispec.Descriptor{}, err
	}
	return pr.Name, desc, nil
}

// resolve asks the endpoints for pr's descriptor: with HEAD, or, when
// getLimit >= 0, with a GET whose body (up to getLimit bytes, not yet
// verified) comes back too.
func (r *registryResolver) resolve(ctx context.Context, pr Reference, getLimit int64) (ocispec.Descriptor, []byte, error) {
	eps, err := r.endpointsWith(pr.Host, capResolve)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	var errs []error
	for _, ep := range eps {
		var desc ocispec.Descriptor
		var data []byte
		mctx, cancel := withManifestDeadline(ctx, ep.Deadlines)
		if getLimit >= 0 {
			desc, data, err = r.get(mctx, ep, pr, getLimit)
		} else {
			desc, err = r.Repository(ep, pr.Repo).Resolve(mctx, pr.Object())
		}
		err = manifestDeadlineErr(mctx, err)
		cancel()
		if err == nil {
			if pr.Digest != "" && desc.Digest != pr.Digest {
				err = fmt.Errorf("%s answered digest %s for %s: %w", ep, desc.Digest, pr.Digest, errdefs.ErrDigestMismatch)
			} else {
				return desc, data, nil
			}
		}
		err = classify(err)
		if errors.Is(err, errdefs.ErrNotFound) {
			err = fmt.Errorf("%s: manifest unknown: %w", pr.Name, errdefs.ErrNotFound)
		}
		if !ep.Mirror && errors.Is(err, errdefs.ErrNotFound) {
			return ocispec.Descriptor{}, nil, err
		}
		if ctx.Err() != nil || isFinal(err) {
			return ocispec.Descriptor{}, nil, fmt.Errorf("resolve %s: %w", pr.Name, err)
		}
		slog.Debug("resolve failed, trying next endpoint", "ref", pr.Name, "endpoint", ep.String(), "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	return ocispec.Descriptor{}, nil, fmt.Errorf("resolve %s: %w", pr.Name, joinErrors(errs))
}

// get fetches pr's manifest with one GET: its descriptor as the registry
// states it, and at most limit+1 bytes of it (over the limit: an error).
func (r *registryResolver) get(ctx context.Context, ep hostEndpoint, pr Reference, limit int64) (ocispec.Descriptor, []byte, error) {
	desc, rc, err := r.Repository(ep, pr.Repo).Manifests().FetchReference(ctx, pr.Object())
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	defer rc.Close()
	if desc.Size > limit {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s is %d bytes, over the limit of %d: %w", desc.Digest, desc.Size, limit, errdefs.ErrInvalidArgument)
	}
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return desc, data, nil
}

// joinErrors keeps one line: the last endpoint's error, with the earlier
// ones folded in.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	last := errs[len(errs)-1]
	var b []string
	for _, e := range errs[:len(errs)-1] {
		b = append(b, e.Error())
	}
	return fmt.Errorf("%w (after: %s)", last, strings.Join(b, "; "))
}
