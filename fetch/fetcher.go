// Package fetch is casfs's registry client: hosts.toml endpoints (mirrors,
// TLS, headers), credentials, resolving references, and pull and push
// orchestration between a registry and the cas store and index.
//
// The protocol (token auth, manifests, uploads, mounts) is oras-go's; this
// package adds what a content store needs around it: resumable blob
// downloads with Range, digest checks before anything is committed,
// mirror fallback, and records in the index.
package fetch

import (
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/oci"
)

// SourceLabelPrefix + registry host labels a blob with the repository it
// came from, as containerd does, so that it can be fetched again lazily or
// mounted across repositories on push.
const SourceLabelPrefix = "containerd.io/distribution.source."

// Progress hears about each blob of a pull or push. It must not block.
type Progress interface {
	Start(d ocispec.Descriptor)
	// Update reports n, the bytes of d done so far (not an increment).
	Update(d ocispec.Descriptor, n int64)
	// Done ends d: err is nil on success; existed tells that nothing had
	// to move because the blob was already there.
	Done(d ocispec.Descriptor, err error, existed bool)
}

// Options configure a Fetcher.
type Options struct {
	HostsDir  string // default: the first of DefaultHostsDirs that exists
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
	// Config is config.toml's registry section (see RegistryOptions).
	Config *RegistryConfig
	// Lazy pulls manifests and configs only; layers get their index
	// records (with source labels) and are fetched on first read through
	// FetchBlob.
	Lazy bool

	// OnManifests, when set, is called once the manifests and configs of a
	// pull are local, before its layers are fetched, so that the caller can
	// start using layers as they arrive (the store unpacks while it pulls).
	OnManifests func(PullResult)
	// BlobDone, when set, is called as each blob of a pull is present and recorded.
	BlobDone func(ocispec.Descriptor)
	// Tee, when set, is offered each blob that is about to be downloaded
	// from its first byte: a non-nil writer gets a copy of the bytes as they
	// arrive and is closed as TeeWriter says. A slow writer slows the
	// download; a failing one is dropped.
	Tee func(ocispec.Descriptor) TeeWriter
}

// Fetcher moves images between registries and the local store.
type Fetcher struct {
	store    *cas.Store
	db       *index.DB
	opts     Options
	platform oci.Platform
	resolver *Resolver
	flight   singleflight.Group
}

// New checks the options; no network or file access happens yet.
func New(store *cas.Store, db *index.DB, opts Options) (*Fetcher, error) {
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
	r, err := NewResolver(RegistryOptions{
		HostsDir: opts.HostsDir, PlainHTTP: opts.PlainHTTP,
		Username: opts.Username, Password: opts.Password, Timeout: opts.Timeout, Deadlines: opts.Deadlines, TLS: opts.TLS, Config: opts.Config,
	})
	if err != nil {
		return nil, err
	}
	return &Fetcher{store: store, db: db, opts: opts, platform: oci.NewPlatform(p), resolver: r}, nil
}

// Resolver is the fetcher's resolver (same hosts, credentials, timeouts).
func (f *Fetcher) Resolver() *Resolver { return f.resolver }

type nopProgress struct{}

func (nopProgress) Start(ocispec.Descriptor)             {}
func (nopProgress) Update(ocispec.Descriptor, int64)     {}
func (nopProgress) Done(ocispec.Descriptor, error, bool) {}

func (f *Fetcher) progress() Progress {
	if f.opts.Progress == nil {
		return nopProgress{}
	}
	return f.opts.Progress
}
