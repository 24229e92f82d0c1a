// Package fetch is casfs's registry client: hosts.toml endpoints (mirrors,
// TLS, headers), credentials, resolving references, and pull and push
// between a registry and the cas store.
//
// The protocol (token auth, manifests, uploads, mounts) is oras-go's; this
// package adds what a content store needs around it: resumable blob
// downloads with Range, digest checks before anything is committed, mirror
// fallback, and one download per digest however many operations ask. What
// it fetched it reports through Records; it writes no records itself.
package fetch

import (
	"context"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/oci"
)

// Source is a repository a blob can be fetched from again.
type Source struct {
	Host string // registry namespace (docker.io)
	Repo string // repository path (library/nginx)
}

// Known is what the store knows of a blob: its descriptor and where it came from.
type Known struct {
	Desc    ocispec.Descriptor
	Sources []Source
}

// Records is the store's side of a fetch: it keeps what fetch looks at in
// the operation's lease, is told of every blob fetch made present (or, in a
// lazy pull, learned of), and says where a known blob came from. The store
// implements it and is the one writer of its records.
type Records interface {
	// Lease adds dgsts to the lease ctx carries, before fetch looks for
	// them, so that a collection running meanwhile keeps them.
	Lease(ctx context.Context, dgsts []digest.Digest) error
	// Record notes that desc is present or known and came from src.
	Record(ctx context.Context, desc ocispec.Descriptor, src Source) error
	// Lookup returns what is known of dgst: errdefs.ErrNotFound when nothing.
	Lookup(ctx context.Context, dgst digest.Digest) (Known, error)
}

// Progress hears about each blob of a pull or push. It must not block.
type Progress interface {
	Start(d ocispec.Descriptor)
	// Update reports n, the bytes of d done so far (not an increment).
	Update(d ocispec.Descriptor, n int64)
	// Done ends d: err is nil on success; existed tells that nothing had
	// to move because the blob was already there.
	Done(d ocispec.Descriptor, err error, existed bool)
}

// Options are what one operation (a pull, a push, a lazy fetch) brings:
// where to find and how to talk to registries, which platform, and who
// hears about progress.
type Options struct {
	HostsDir  string // default: the first of defaultHostsDirs that exists
	PlainHTTP bool
	// Username and Password override docker's config.json for every registry.
	Username, Password string
	Platform           string // os/arch[/variant]; default HostPlatform
	// HostPlatform is what an empty Platform means; zero: this machine's.
	HostPlatform    ocispec.Platform
	AllPlatforms    bool
	MaxConcurrent   int // blobs moved at once; default 3
	Progress        Progress
	MaxManifestSize int64 // default 4 MiB
	// Timeout bounds dialing, TLS handshakes and response headers;
	// default 30 s.
	Timeout time.Duration
	// Deadlines, where set, win over hosts.toml's read deadlines.
	Deadlines ReadDeadlines
	// TLS, where set, wins over hosts.toml's TLS settings.
	TLS TLSOptions
	// Config is config.toml's registry section (see registryOptions).
	Config *RegistryConfig
	// Lazy pulls manifests and configs only; layers get their records
	// (with sources) and are fetched on first read through FetchBlob.
	Lazy bool
	// ResolveByGet resolves a tag with one GET of its manifest, whose
	// bytes the pull then uses, instead of a HEAD and a GET: one round
	// trip less before anything else can start. For a first pull of a
	// name: a pull that may find the manifest local asks with HEAD, which
	// registries such as Docker Hub do not count against pull quotas.
	ResolveByGet bool
}

// Fetcher moves content between registries and one store. One Fetcher
// serves every operation on the store, so that operations asking for the
// same blob at the same time share one download.
type Fetcher struct {
	store     *cas.Store
	rec       Records
	flight    singleflight.Group
	resolvers resolvers
}

// New makes the store's fetcher; no network or file access happens yet.
func New(store *cas.Store, rec Records) *Fetcher {
	return &Fetcher{store: store, rec: rec}
}

// op is one operation of the Fetcher: its options, resolver (shared with
// the operations that bring the same registry options) and platform.
type op struct {
	*Fetcher
	opts     Options
	platform oci.Platform
	resolver *registryResolver
}

// op checks the options of one operation.
func (f *Fetcher) op(opts Options) (*op, error) {
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 3
	}
	if opts.MaxManifestSize <= 0 {
		opts.MaxManifestSize = 4 << 20
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	host := opts.HostPlatform
	if host.OS == "" {
		host = oci.HostPlatform()
	}
	p, err := oci.ParsePlatform(opts.Platform, host)
	if err != nil {
		return nil, err
	}
	r, err := f.resolvers.get(registryOptions{
		HostsDir: opts.HostsDir, PlainHTTP: opts.PlainHTTP,
		Username: opts.Username, Password: opts.Password, Timeout: opts.Timeout, Deadlines: opts.Deadlines, TLS: opts.TLS, Config: opts.Config,
	})
	if err != nil {
		return nil, err
	}
	return &op{Fetcher: f, opts: opts, platform: oci.NewPlatform(p), resolver: r}, nil
}

type nopProgress struct{}

func (nopProgress) Start(ocispec.Descriptor)             {}
func (nopProgress) Update(ocispec.Descriptor, int64)     {}
func (nopProgress) Done(ocispec.Descriptor, error, bool) {}

func (f *op) progress() Progress {
	if f.opts.Progress == nil {
		return nopProgress{}
	}
	return f.opts.Progress
}

// pullContent resolves ref, walks index -> manifests of the selected
// platform(s) -> config and layers, and fetches everything missing into the
// store (MaxConcurrent at a time), recording each blob with its source. It
// records no image.
func (f *Fetcher) pullContent(ctx context.Context, ref string, opts Options) (PullResult, error) {
	p, err := f.Resolve(ctx, ref, opts)
	if err != nil {
		return PullResult{}, err
	}
	if err := Dispatch(ctx, p.Limit(), p.Handler(), p.Target); err != nil {
		return PullResult{}, err
	}
	return p.Result(ctx)
}

// FetchBlob fetches a blob that the store knows but lacks, from the
// registries and repositories it came from, verifies it and commits it.
// Concurrent callers for one digest share one download; a tee ctx carries
// (WithTee) gets the bytes of the download this call leads.
func (f *Fetcher) FetchBlob(ctx context.Context, dgst digest.Digest, opts Options) error {
	o, err := f.op(opts)
	if err != nil {
		return err
	}
	return o.fetchKnown(ctx, dgst)
}

// FetchContent fetches what ref names, as `content fetch` does: an image
// with everything it references, or, for REF@digest naming a layer or
// config, that one blob through the registry's blob endpoint (as ctr
// does when the manifest endpoint refuses the digest).
//
// A digest is first looked up at the blob endpoint: a blob over the
// manifest size bound cannot be a manifest, and asking the manifest
// endpoint for it is not free (docker-registry reads the whole blob to
// answer, seconds per GiB), so such a blob is fetched directly.
func (f *Fetcher) FetchContent(ctx context.Context, ref string, opts Options) (ocispec.Descriptor, error) {
	o, err := f.op(opts)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	pr, err := ParseReference(ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if pr.Digest != "" {
		if desc, err := o.fetchBlobByRef(ctx, pr, o.opts.MaxManifestSize); err == nil || !errors.Is(err, errNotLarge) {
			return desc, err
		}
	}
	p, err := o.resolvePull(ctx, pr)
	if err == nil {
		if err = Dispatch(ctx, p.Limit(), p.Handler(), p.Target); err == nil {
			return p.Target, nil
		}
	}
	if pr.Digest != "" && ctx.Err() == nil {
		// Registries answer a manifest request for a small layer or
		// config with an error (some with 500): try the blob endpoint
		// before giving up.
		if desc, berr := o.fetchBlobByRef(ctx, pr, -1); berr == nil {
			return desc, nil
		}
	}
	return ocispec.Descriptor{}, err
}

// ReadBlobRange fills p with the bytes at off of a blob the store knows,
// with one HTTP Range request; nothing is stored.
func (f *Fetcher) ReadBlobRange(ctx context.Context, dgst digest.Digest, off int64, p []byte, opts Options) error {
	o, err := f.op(opts)
	if err != nil {
		return err
	}
	return o.readBlobRange(ctx, dgst, off, p)
}

// Push sends the local image localName, whose target is root, to remoteRef.
// With opts.Platform set and an index as root, only that platform's
// manifest goes, as its own tag.
func (f *Fetcher) Push(ctx context.Context, localName string, root ocispec.Descriptor, remoteRef string, opts Options) error {
	o, err := f.op(opts)
	if err != nil {
		return err
	}
	return o.push(ctx, localName, root, remoteRef)
}
