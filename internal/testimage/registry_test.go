package testimage

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/testenv"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func skopeo(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := skopeoErr(t, args...)
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func skopeoErr(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	testenv.Require(t, "skopeo")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "skopeo", args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no user auth files
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return []byte(stderr.String()), err
	}
	return out, nil
}

type inspectOut struct {
	Digest       digest.Digest
	Architecture string
	Layers       []digest.Digest
}

func inspect(t *testing.T, args ...string) inspectOut {
	t.Helper()
	var o inspectOut
	out := skopeo(t, append([]string{"inspect"}, args...)...)
	if err := json.Unmarshal(out, &o); err != nil {
		t.Fatalf("skopeo inspect output: %v\n%s", err, out)
	}
	return o
}

func build(t *testing.T, spec ImageSpec) *Image {
	t.Helper()
	img, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestPushThreeLayersSkopeo(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := build(t, threeLayers())
	ctx := context.Background()
	if err := Push(ctx, reg.URL, "lab/three", "v1", img.Blobs, img.Manifest, reg.Client()); err != nil {
		t.Fatal(err)
	}
	if n := reg.RequestCount(http.MethodPost, "/v2/lab/three/blobs/uploads/"); n != 4 {
		t.Fatalf("first push started %d uploads, want 4 (config and 3 layers)", n)
	}
	// A second push finds every blob already there (HEAD) and uploads none.
	heads := reg.RequestCount(http.MethodHead, "/v2/lab/three/blobs/")
	if err := Push(ctx, reg.URL, "lab/three", "v2", img.Blobs, img.Manifest, reg.Client()); err != nil {
		t.Fatal(err)
	}
	if n := reg.RequestCount(http.MethodPost, "/v2/lab/three/blobs/uploads/"); n != 4 {
		t.Fatalf("second push started uploads: %d in all, want 4", n)
	}
	if n := reg.RequestCount(http.MethodHead, "/v2/lab/three/blobs/") - heads; n != 4 {
		t.Fatalf("second push made %d blob HEADs, want 4", n)
	}
	if n := reg.RequestCount(http.MethodPut, "/v2/lab/three/manifests/v2"); n != 1 {
		t.Fatalf("tag v2 put %d times, want 1", n)
	}

	got := inspect(t, "--tls-verify=false", "docker://"+reg.Ref("lab/three", "v1"))
	if got.Digest != img.Manifest.Digest {
		t.Fatalf("skopeo digest %s, pushed %s", got.Digest, img.Manifest.Digest)
	}
	if len(got.Layers) != 3 || got.Layers[1] != img.Layers[1].Digest {
		t.Fatalf("skopeo layers %v, pushed %v", got.Layers, img.Layers)
	}
	raw := skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+reg.Ref("lab/three", "v2"))
	if string(raw) != string(img.ManifestBytes()) {
		t.Fatalf("v2 manifest differs:\n%s\n%s", raw, img.ManifestBytes())
	}

	dir := filepath.Join(t.TempDir(), "oci")
	// --preserve-digests: by default skopeo would gzip the uncompressed layer
	// for an oci destination, which changes the manifest.
	skopeo(t, "copy", "--insecure-policy", "--preserve-digests", "--src-tls-verify=false",
		"docker://"+reg.Ref("lab/three", "v1"), "oci:"+dir+":v1")
	for _, d := range append([]digest.Digest{img.Manifest.Digest, img.Config.Digest}, img.DiffIDs[2], img.Layers[0].Digest, img.Layers[1].Digest) {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()))
		if err != nil || digest.FromBytes(b) != d {
			t.Errorf("copied layout lacks blob %s: %v", d, err)
		}
	}
}

func TestWriteLayoutSkopeoUmoci(t *testing.T) {
	testenv.Require(t, "umoci")
	img := build(t, threeLayers())
	other := build(t, ImageSpec{Layers: []Layer{{Files: []File{Reg("f", 0o644, "x")}}}})
	dir := filepath.Join(t.TempDir(), "layout")
	if err := WriteLayout(dir, "v1", img.Manifest, img.Blobs); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(dir, "other", other.Manifest, other.Blobs); err != nil {
		t.Fatal(err)
	}
	if got := inspect(t, "oci:"+dir+":v1"); got.Digest != img.Manifest.Digest {
		t.Fatalf("skopeo oci digest %s, want %s", got.Digest, img.Manifest.Digest)
	}
	if got := inspect(t, "oci:"+dir+":other"); got.Digest != other.Manifest.Digest {
		t.Fatalf("skopeo oci digest %s, want %s", got.Digest, other.Manifest.Digest)
	}
	out, err := exec.Command("umoci", "ls", "--layout", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("umoci ls: %v\n%s", err, out)
	}
	if tags := strings.Fields(string(out)); len(tags) != 2 || tags[0] != "other" || tags[1] != "v1" {
		t.Fatalf("umoci ls = %q, want [other v1]", tags)
	}
	if err := WriteLayout(dir, "x", ocispec.Descriptor{Digest: digest.FromString("absent")}, img.Blobs); err == nil {
		t.Fatal("root outside the blob set accepted")
	}
}

func authFile(t *testing.T, host, user, pass string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))},
	}})
	p := filepath.Join(t.TempDir(), "auth.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPushTLSAuth(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{TLS: true, Auth: true})
	img := build(t, threeLayers())
	ctx := context.Background()

	err := Push(ctx, reg.URL, "lab/auth", "v1", img.Blobs, img.Manifest, reg.Client())
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized {
		t.Fatalf("push without credentials: %v; want a 401 StatusError", err)
	}
	err = Push(ctx, reg.URL, "lab/auth", "v1", img.Blobs, img.Manifest, reg.Client(),
		PushOptions{Username: reg.Username, Password: "wrong"})
	if !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized {
		t.Fatalf("push with a wrong password: %v; want a 401 StatusError", err)
	}
	if err := Push(ctx, reg.URL, "lab/auth", "v1", img.Blobs, img.Manifest, reg.Client(),
		PushOptions{Username: reg.Username, Password: reg.Password}); err != nil {
		t.Fatal(err)
	}
	if err := Push(ctx, reg.URL, "lab/auth", "v1", img.Blobs, img.Manifest, &http.Client{},
		PushOptions{Username: reg.Username, Password: reg.Password}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("push without the CA: %v; want a certificate error", err)
	}

	// skopeo reads the CA from the certs.d-style folder and the credentials
	// from an auth file.
	af := authFile(t, reg.Host, reg.Username, reg.Password)
	got := inspect(t, "--cert-dir", reg.CADir, "--authfile", af, "docker://"+reg.Ref("lab/auth", "v1"))
	if got.Digest != img.Manifest.Digest {
		t.Fatalf("skopeo digest %s, pushed %s", got.Digest, img.Manifest.Digest)
	}
	if out, err := skopeoErr(t, "inspect", "--cert-dir", reg.CADir, "docker://"+reg.Ref("lab/auth", "v1")); err == nil {
		t.Fatalf("skopeo inspect without credentials succeeded:\n%s", out)
	}
}

func TestPushClientCA(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{ClientCA: true})
	img := build(t, threeLayers())
	ctx := context.Background()
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: reg.CA.Pool()}}}
	if err := Push(ctx, reg.URL, "lab/mtls", "v1", img.Blobs, img.Manifest, noCert); err == nil {
		t.Fatal("push without a client certificate succeeded")
	}
	if err := Push(ctx, reg.URL, "lab/mtls", "v1", img.Blobs, img.Manifest, reg.Client()); err != nil {
		t.Fatal(err)
	}
	// skopeo finds ca.crt, client.cert and client.key in CADir.
	if got := inspect(t, "--cert-dir", reg.CADir, "docker://"+reg.Ref("lab/mtls", "v1")); got.Digest != img.Manifest.Digest {
		t.Fatalf("skopeo digest %s, pushed %s", got.Digest, img.Manifest.Digest)
	}
}

func TestProxyServesUpstream(t *testing.T) {
	up := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := build(t, threeLayers())
	ctx := context.Background()
	if err := Push(ctx, up.URL, "lab/proxied", "v1", img.Blobs, img.Manifest, up.Client()); err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartRegistry(t, testenv.RegistryOptions{ProxyRemoteURL: up.URL})

	get := func(path, accept string) ([]byte, http.Header) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, proxy.URL+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := proxy.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s via proxy: %s\n%s\n--- proxy log ---\n%s", path, resp.Status, b, proxy.LogTail())
		}
		return b, resp.Header
	}
	body, hdr := get("/v2/lab/proxied/manifests/v1", ocispec.MediaTypeImageManifest)
	if string(body) != string(img.ManifestBytes()) || hdr.Get("Docker-Content-Digest") != img.Manifest.Digest.String() {
		t.Fatalf("proxy manifest %s (%s), want %s", hdr.Get("Docker-Content-Digest"), body, img.Manifest.Digest)
	}
	layer, _ := get("/v2/lab/proxied/blobs/"+img.Layers[1].Digest.String(), "")
	if digest.FromBytes(layer) != img.Layers[1].Digest {
		t.Fatalf("proxy blob digest %s, want %s", digest.FromBytes(layer), img.Layers[1].Digest)
	}
	// A pull-through cache refuses pushes.
	if err := Push(ctx, proxy.URL, "lab/other", "v1", img.Blobs, img.Manifest, proxy.Client()); err == nil {
		t.Fatal("push to a proxy registry succeeded")
	}
}

func TestPushIndexSkopeoRaw(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ctx := context.Background()
	for _, docker := range []bool{false, true} {
		var imgs []*Image
		for _, arch := range []string{"amd64", "arm64"} {
			imgs = append(imgs, build(t, ImageSpec{
				Docker:   docker,
				Platform: ocispec.Platform{OS: "linux", Architecture: arch},
				Layers:   []Layer{{Files: []File{Reg("arch", 0o644, arch)}}},
			}))
		}
		ix, err := BuildIndex(imgs, docker)
		if err != nil {
			t.Fatal(err)
		}
		tag := "oci"
		if docker {
			tag = "docker"
		}
		if err := Push(ctx, reg.URL, "lab/multi", tag, ix.Blobs, ix.Desc, reg.Client()); err != nil {
			t.Fatal(err)
		}
		ref := "docker://" + reg.Ref("lab/multi", tag)
		raw := skopeo(t, "inspect", "--raw", "--tls-verify=false", ref)
		if digest.FromBytes(raw) != ix.Desc.Digest {
			t.Fatalf("%s: raw index %s, pushed %s", tag, digest.FromBytes(raw), ix.Desc.Digest)
		}
		var got ocispec.Index
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		if got.MediaType != ix.Desc.MediaType || len(got.Manifests) != 2 || got.Manifests[1].Platform.Architecture != "arm64" {
			t.Fatalf("%s: index %s", tag, raw)
		}
		arm := inspect(t, "--tls-verify=false", "--override-os", "linux", "--override-arch", "arm64", ref)
		if arm.Architecture != "arm64" || len(arm.Layers) != 1 || arm.Layers[0] != imgs[1].Layers[0].Digest {
			t.Fatalf("%s: arm64 inspect %+v, want layer %s", tag, arm, imgs[1].Layers[0].Digest)
		}
	}
}

func TestProxyOfTLSUpstream(t *testing.T) {
	up := testenv.StartRegistry(t, testenv.RegistryOptions{TLS: true})
	img := build(t, threeLayers())
	if err := Push(context.Background(), up.URL, "lab/secure", "v1", img.Blobs, img.Manifest, up.Client()); err != nil {
		t.Fatal(err)
	}
	// The proxy trusts the upstream's CA through ProxyCACertPath; without it
	// the registry refuses to start (it pings the upstream at startup).
	proxy := testenv.StartRegistry(t, testenv.RegistryOptions{ProxyRemoteURL: up.URL, ProxyCACertPath: up.CACertPath})
	out, err := skopeoErr(t, "inspect", "--tls-verify=false", "docker://"+proxy.Ref("lab/secure", "v1"))
	if err != nil {
		t.Fatalf("inspect via proxy: %v: %s\n--- proxy log ---\n%s", err, out, proxy.LogTail())
	}
	var got inspectOut
	if err := json.Unmarshal(out, &got); err != nil || got.Digest != img.Manifest.Digest {
		t.Fatalf("proxy digest %s (%v), want %s", got.Digest, err, img.Manifest.Digest)
	}
}
