package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/fetch"
)

// ImageInfo is one entry of the image catalogue.
type ImageInfo struct {
	Name      string             `json:"name"`
	Target    ocispec.Descriptor `json:"target"`
	Size      int64              `json:"size"`                // bytes of the selected platform(s)' manifests, configs and layers
	Platforms []string           `json:"platforms,omitempty"` // the platforms whose manifests are local
	// RemotePlatforms are the platforms the image's index names whose
	// manifests are not local (not pulled).
	RemotePlatforms []string          `json:"remotePlatforms,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	CreatedAt       time.Time         `json:"createdAt"`
	UpdatedAt       time.Time         `json:"updatedAt"`
}

// ImageDetail is `image info`: the record plus the documents it points at.
type ImageDetail struct {
	ImageInfo
	Index    json.RawMessage `json:"index,omitempty"`
	Manifest json.RawMessage `json:"manifest,omitempty"`
	Config   json.RawMessage `json:"config,omitempty"`
	// Layers says where each layer of the shown manifest stands.
	Layers []LayerState `json:"layers,omitempty"`
}

// LayerState is one layer of an image in `image info`.
type LayerState struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// State is "local" (in blobs/), "lazy" (an eStargz layer served file
	// by file from its TOC until it is complete) or "remote" (fetched
	// whole on first access).
	State string `json:"state"`
	// Cached is the bytes of a lazy layer held in its chunk cache.
	Cached int64 `json:"cached,omitempty"`
}

// RegistryOptions say how to reach registries. Password travels only in
// memory and over the 0600 socket, never on a command line.
type RegistryOptions struct {
	HostsDir  string `json:"hostsDir,omitempty"`
	PlainHTTP bool   `json:"plainHTTP,omitempty"`
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
	// Deadlines, where set, win over hosts.toml's read deadlines.
	Deadlines fetch.ReadDeadlines `json:"deadlines,omitempty"`
	// TLS, where set, wins over hosts.toml's TLS settings.
	TLS fetch.TLSOptions `json:"tls,omitempty"`
	// Config is config.toml's registry section, read by the command.
	Config *fetch.RegistryConfig `json:"config,omitempty"`
}

// ProgressEvent reports one blob's state during a pull or push.
type ProgressEvent struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType,omitempty"`
	Total     int64         `json:"total"`
	Done      int64         `json:"done"`
	// Status: waiting, fetching, pushing, unpacking, done, exists, error.
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// ProgressFunc receives progress events; it must not block for long.
type ProgressFunc func(ProgressEvent)

// PullOptions control pull and content fetch.
type PullOptions struct {
	RegistryOptions
	Platform      string `json:"platform,omitempty"` // os/arch[/variant]; default this machine's
	AllPlatforms  bool   `json:"allPlatforms,omitempty"`
	MaxConcurrent int    `json:"maxConcurrent,omitempty"`
	NoUnpack      bool   `json:"noUnpack,omitempty"`
	Lazy          bool   `json:"lazy,omitempty"` // manifests and configs only; layers on first read
	// NoComplete keeps the eStargz layers of a lazy pull lazy: the mount
	// fetches only what is read, never the rest in the background.
	NoComplete bool         `json:"noComplete,omitempty"`
	Progress   ProgressFunc `json:"-"`
}

// PushOptions control push.
type PushOptions struct {
	RegistryOptions
	Platform      string       `json:"platform,omitempty"`
	MaxConcurrent int          `json:"maxConcurrent,omitempty"`
	Progress      ProgressFunc `json:"-"`
}

// Images is the image-catalogue half of the API (ctr image).
type Images interface {
	Pull(ctx context.Context, ref string, opts PullOptions) (ImageInfo, error)
	// FetchContent fetches all content of an image without recording or unpacking it.
	FetchContent(ctx context.Context, ref string, opts PullOptions) (ocispec.Descriptor, error)
	// Push sends the local image ref to remote ("" means ref itself).
	Push(ctx context.Context, ref, remote string, opts PushOptions) error
	ListImages(ctx context.Context) ([]ImageInfo, error)
	// GetImage shows the record and the manifest, config and layers for
	// platform ("" means this machine's best local match).
	GetImage(ctx context.Context, ref, platform string) (ImageDetail, error)
	TagImage(ctx context.Context, src string, dsts []string) error
	RemoveImage(ctx context.Context, ref string) error
	// LabelImage sets and removes labels of the image record ref (like
	// ctr images label) and returns the updated record.
	LabelImage(ctx context.Context, ref string, set map[string]string, del []string) (ImageInfo, error)
	// ConvertImage records dst as a copy of the local image src with its
	// layers recompressed (eStargz, or plain gzip back).
	ConvertImage(ctx context.Context, src, dst string, opts ConvertOptions) (ImageInfo, error)
}
