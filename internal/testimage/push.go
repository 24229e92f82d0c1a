package testimage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/oci"
)

// PushOptions carries what Push needs beyond the client.
type PushOptions struct {
	// Username and Password, when Username is set, are sent as basic auth
	// on every request (the way htpasswd registries expect it).
	Username, Password string
}

// StatusError is an unexpected HTTP answer from the registry.
type StatusError struct {
	Method, URL string
	StatusCode  int
	Status      string
	Body        string // start of the body, usually the registry's JSON error
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.Method, e.URL, e.Status, e.Body)
}

// Push uploads root and everything it references from blobs to
// reg ("http(s)://host:port") as repo, children before parents, skipping
// blobs the registry already has, and tags root with tag (unless tag is
// empty). Manifests are put by digest, and the root then by tag. client nil
// means http.DefaultClient; opts takes at most one PushOptions.
func Push(ctx context.Context, reg, repo, tag string, blobs map[digest.Digest][]byte, root ocispec.Descriptor, client *http.Client, opts ...PushOptions) error {
	p := &pusher{base: strings.TrimSuffix(reg, "/") + "/v2/" + repo, blobs: blobs, client: client}
	if p.client == nil {
		p.client = http.DefaultClient
	}
	if len(opts) > 0 {
		p.opts = opts[0]
	}
	if err := p.push(ctx, root, 0); err != nil {
		return fmt.Errorf("push %s to %s/%s: %w", root.Digest, reg, repo, err)
	}
	if tag != "" {
		if err := p.putManifest(ctx, root, tag); err != nil {
			return fmt.Errorf("tag %s as %s:%s: %w", root.Digest, repo, tag, err)
		}
	}
	return nil
}

type pusher struct {
	base   string
	blobs  map[digest.Digest][]byte
	client *http.Client
	opts   PushOptions
}

func (p *pusher) push(ctx context.Context, d ocispec.Descriptor, depth int) error {
	if depth > 8 {
		return fmt.Errorf("index nesting deeper than 8 at %s", d.Digest)
	}
	b, err := p.blob(d)
	if err != nil {
		return err
	}
	doc, err := oci.Parse(d, b)
	if err != nil {
		return err
	}
	// Children first, so the registry never sees a document whose parts
	// it lacks; a manifest's parts are blobs, an index's are documents.
	for _, c := range doc.Parts() {
		if doc.Index != nil {
			err = p.push(ctx, c, depth+1)
		} else {
			err = p.pushBlob(ctx, c)
		}
		if err != nil {
			return err
		}
	}
	return p.putManifest(ctx, d, d.Digest.String())
}

func (p *pusher) blob(d ocispec.Descriptor) ([]byte, error) {
	b, ok := p.blobs[d.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s is not in the blob set", d.Digest)
	}
	return b, nil
}

func (p *pusher) pushBlob(ctx context.Context, d ocispec.Descriptor) error {
	b, err := p.blob(d)
	if err != nil {
		return err
	}
	resp, err := p.do(ctx, http.MethodHead, p.base+"/blobs/"+d.Digest.String(), "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	if resp.StatusCode != http.StatusNotFound {
		return statusError(resp)
	}

	resp, err = p.do(ctx, http.MethodPost, p.base+"/blobs/uploads/", "", nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return statusError(resp)
	}
	resp.Body.Close()
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("upload of %s: bad Location %q", d.Digest, resp.Header.Get("Location"))
	}
	q := loc.Query()
	q.Set("digest", d.Digest.String())
	loc.RawQuery = q.Encode()
	resp, err = p.do(ctx, http.MethodPut, loc.String(), "application/octet-stream", b)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return statusError(resp)
	}
	resp.Body.Close()
	return nil
}

func (p *pusher) putManifest(ctx context.Context, d ocispec.Descriptor, ref string) error {
	b, err := p.blob(d)
	if err != nil {
		return err
	}
	resp, err := p.do(ctx, http.MethodPut, p.base+"/manifests/"+url.PathEscape(ref), d.MediaType, b)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return statusError(resp)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != d.Digest.String() {
		return fmt.Errorf("registry stored manifest %s as %s", d.Digest, got)
	}
	return nil
}

func (p *pusher) do(ctx context.Context, method, u, contentType string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if p.opts.Username != "" {
		req.SetBasicAuth(p.opts.Username, p.opts.Password)
	}
	return p.client.Do(req)
}

func statusError(resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return &StatusError{
		Method:     resp.Request.Method,
		URL:        resp.Request.URL.Redacted(),
		StatusCode: resp.StatusCode,
		Status:     resp.Status,
		Body:       strings.TrimSpace(string(b)),
	}
}
