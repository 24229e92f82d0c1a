package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// served is a running `casfs serve` owned by one test.
type served struct {
	URL, Host string
	cmd       *exec.Cmd
	stderr    *lockedBuffer
	done      chan error
}

// startServe runs `casfs serve` on a free loopback port (plus args).
func startServe(t *testing.T, c *cli, args ...string) *served {
	t.Helper()
	host := "127.0.0.1:" + itoa(testenv.FreePort(t))
	s := startServing(t, c, append([]string{"--log-level", "debug", "serve", "--addr", host}, args...)...)
	s.Host = host
	return s
}

// startServing runs a casfs daemon that serves a registry in the
// foreground, waits for the line saying where it listens, and stops it
// with SIGTERM when the test ends, failing the test unless it exits 0.
func startServing(t *testing.T, c *cli, args ...string) *served {
	t.Helper()
	cmd := c.command(nil, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &served{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(l)
		io.Copy(io.Discard, stdout)
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if code := s.stop(t); code != 0 {
			t.Errorf("casfs serve exited %d after SIGTERM\n%s", code, s.stderr)
		}
	})
	select {
	case l := <-line:
		url, ok := strings.CutPrefix(l, "serving the store as a registry on ")
		if !ok {
			t.Fatalf("casfs serve printed %q\n%s", l, s.stderr)
		}
		s.URL = url
	case <-time.After(time.Minute):
		t.Fatalf("casfs serve did not say where it listens within a minute\n%s", s.stderr)
	}
	return s
}

// stop sends SIGTERM and returns the exit status (-1 if it had to be killed).
func (s *served) stop(t *testing.T) int {
	if s.cmd.ProcessState != nil {
		return s.cmd.ProcessState.ExitCode()
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		<-s.done
		t.Errorf("casfs serve did not stop within a minute of SIGTERM")
		return -1
	}
}

// lockedBuffer lets the test read stderr while the process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mirrorHosts writes a hosts.toml for upstream (a host:port) that lists the
// mirrors, in order, before the upstream server.
func mirrorHosts(t *testing.T, upstream string, mirrors ...string) string {
	t.Helper()
	var b strings.Builder
	for _, m := range mirrors {
		fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", m)
	}
	return writeHosts(t, upstream, b.String())
}

// writeHosts writes <dir>/<upstream>/hosts.toml: the upstream server, then
// hostBlocks, and returns dir.
func writeHosts(t *testing.T, upstream, hostBlocks string) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, upstream), 0o755)
	body := fmt.Sprintf("server = \"http://%s\"\n%s", upstream, hostBlocks)
	if err := os.WriteFile(filepath.Join(dir, upstream, "hosts.toml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// platformIndex builds an index of one image per architecture, with the
// layers layersOf gives it.
func platformIndex(t *testing.T, archs []string, layersOf func(arch string) []testimage.Layer) *testimage.Index {
	t.Helper()
	var imgs []*testimage.Image
	for _, arch := range archs {
		img, err := testimage.Build(testimage.ImageSpec{Platform: ocispec.Platform{OS: "linux", Architecture: arch}, Layers: layersOf(arch)})
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	idx, err := testimage.BuildIndex(imgs, false)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// multiPlatformImage is a two-platform index of small two-layer images.
func multiPlatformImage(t *testing.T) *testimage.Index {
	return platformIndex(t, []string{"amd64", "arm64"}, func(arch string) []testimage.Layer {
		return []testimage.Layer{
			{Files: []testimage.File{testimage.Reg("etc/arch", 0o644, arch+"\n")}},
			{Files: []testimage.File{testimage.Reg("data/big", 0o644, strings.Repeat(arch, 100000))}},
		}
	})
}

func pushIndex(t *testing.T, reg *testenv.Registry, repo, tag string, idx *testimage.Index) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testimage.Push(ctx, reg.URL, repo, tag, idx.Blobs, idx.Desc, reg.Client()); err != nil {
		t.Fatal(err)
	}
	return reg.Ref(repo, tag)
}

func httpGet(t *testing.T, client *http.Client, url string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, b
}

func errorCode(b []byte) string {
	var body struct{ Errors []struct{ Code string } }
	if json.Unmarshal(b, &body) != nil || len(body.Errors) == 0 {
		return ""
	}
	return body.Errors[0].Code
}

// TestServeSkopeoMultiPlatform: skopeo copies a two-platform image from
// casfs serve with every digest equal to the source; Range, missing names
// and digests, and a blob no image reaches answer as the spec says.
func TestServeSkopeoMultiPlatform(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "skopeo")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	idx := multiPlatformImage(t)
	ref := pushIndex(t, reg, "lab/multi", "1", idx)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "--all-platforms", "--no-unpack", "-q", ref)
	srv := startServe(t, c)
	// Through the daemon's socket while it serves: a blob no image reaches.
	stray := c.OK(strings.NewReader("nobody's blob"), "content", "ingest", "-q", "stray")

	raw, err := exec.Command("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+srv.Host+"/lab/multi:1").Output()
	if err != nil || digest.FromBytes(raw) != idx.Desc.Digest {
		t.Fatalf("skopeo inspect --raw: %v, digest %s, want %s", err, digest.FromBytes(raw), idx.Desc.Digest)
	}
	oci := filepath.Join(t.TempDir(), "oci")
	if out, err := exec.Command("skopeo", "copy", "--all", "--src-tls-verify=false", "docker://"+srv.Host+"/lab/multi:1", "oci:"+oci+":x").CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v: %s\n%s", err, out, srv.stderr)
	}
	for d, want := range idx.Blobs {
		got, err := os.ReadFile(filepath.Join(oci, "blobs", "sha256", d.Encoded()))
		if err != nil || string(got) != string(want) {
			t.Errorf("skopeo's copy lacks or differs in %s: %v", d, err)
		}
	}

	base := srv.URL + "/v2/lab/multi/"
	layer := idx.Images[1].Layers[1]
	whole := idx.Blobs[layer.Digest]
	code, h, b := httpGet(t, http.DefaultClient, base+"blobs/"+layer.Digest.String(), "Range", "bytes=100-199")
	if code != 206 || string(b) != string(whole[100:200]) || h.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(whole)) {
		t.Errorf("range: %d %v, %d bytes", code, h, len(b))
	}
	if code, h, _ := httpGet(t, http.DefaultClient, base+"blobs/"+layer.Digest.String(), "Range", fmt.Sprintf("bytes=%d-", len(whole)+10)); code != 416 {
		t.Errorf("range past the end: %d %v", code, h)
	}
	for _, tc := range []struct {
		path, code string
		status     int
	}{
		{"/v2/lab/none/manifests/1", "NAME_UNKNOWN", 404},
		{"/v2/lab/multi/manifests/2", "MANIFEST_UNKNOWN", 404},
		{"/v2/lab/multi/manifests/" + digest.FromString("x").String(), "MANIFEST_UNKNOWN", 404},
		{"/v2/lab/multi/blobs/" + digest.FromString("x").String(), "BLOB_UNKNOWN", 404},
		{"/v2/lab/multi/blobs/" + strings.TrimSpace(stray), "BLOB_UNKNOWN", 404},
		{"/v2/lab/multi/blobs/sha256:nothex", "DIGEST_INVALID", 400},
	} {
		if code, _, b := httpGet(t, http.DefaultClient, srv.URL+tc.path); code != tc.status || errorCode(b) != tc.code {
			t.Errorf("GET %s: %d %s, want %d %s", tc.path, code, b, tc.status, tc.code)
		}
	}
	if !strings.Contains(srv.stderr.String(), "registry request") {
		t.Errorf("no request lines in the debug log:\n%s", srv.stderr)
	}
}

// seededPeer pulls a two-platform image repo:1 from a registry into a new
// store and stops the registry: from then on only peers can serve it.
func seededPeer(t *testing.T, repo string) (*testenv.Registry, *testimage.Index, string, *cli) {
	t.Helper()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	idx := multiPlatformImage(t)
	ref := pushIndex(t, reg, repo, "1", idx)
	a := newCLI(t)
	a.OK(nil, "image", "pull", "--plain-http", "--all-platforms", "--no-unpack", "-q", ref)
	reg.Stop()
	return reg, idx, ref, a
}

// TestServeMirrorForCtrAndCasfs: containerd (ctr) and a second casfs pull
// through casfs serve as a hosts.toml mirror while the upstream registry of
// that hosts.toml is down, so every byte came from the peer.
func TestServeMirrorForCtrAndCasfs(t *testing.T) {
	t.Parallel()
	reg, idx, ref, a := seededPeer(t, "lab/app")
	srv := startServe(t, a)
	hosts := mirrorHosts(t, reg.Host, srv.URL)

	b := newCLI(t)
	b.OK(nil, "image", "pull", "--hosts-dir", hosts, "--platform", "linux/arm64", "-q", ref)
	out := b.OK(nil, "image", "ls", "--format", "json")
	if !strings.Contains(out, idx.Desc.Digest.String()) {
		t.Fatalf("pull through the mirror recorded\n%s", out)
	}
	b.OK(nil, "content", "verify")
	info := b.OK(nil, "content", "ls", "-q")
	for _, l := range idx.Images[1].Layers {
		if !strings.Contains(info, l.Digest.String()) {
			t.Errorf("arm64 layer %s not fetched through the mirror", l.Digest)
		}
	}

	ctrd := testenv.StartContainerd(t)
	ctrd.Ctr(t, "content", "fetch", "--hosts-dir", hosts, "--platform", "linux/amd64", ref)
	listed := ctrd.Ctr(t, "content", "ls", "-q")
	for _, d := range append([]ocispec.Descriptor{idx.Desc, idx.Images[0].Manifest, idx.Images[0].Config}, idx.Images[0].Layers...) {
		if !strings.Contains(listed, d.Digest.String()) {
			t.Errorf("containerd lacks %s after fetching through the mirror:\n%s", d.Digest, listed)
		}
	}
	if !strings.Contains(srv.stderr.String(), "ns="+url.QueryEscape(reg.Host)) {
		t.Errorf("the mirror was not asked with ns=%s:\n%s", reg.Host, srv.stderr)
	}
}

// TestServeChain: A pulls from the registry; B pulls lazily through A
// (manifests and configs only) and serves; C pulls through B, which fetches
// the layers from A while serving them. Only A ever talked to the registry.
func TestServeChain(t *testing.T) {
	t.Parallel()
	reg, idx, ref, a := seededPeer(t, "lab/chain")
	srvA := startServe(t, a)
	viaA := mirrorHosts(t, reg.Host, srvA.URL)

	b := newCLI(t)
	b.OK(nil, "image", "pull", "--hosts-dir", viaA, "--platform", "linux/amd64", "--lazy", "-q", ref)
	layer := idx.Images[0].Layers[1].Digest.String()
	layerFile := filepath.Join(b.Root, "blobs", "sha256", strings.TrimPrefix(layer, "sha256:"))
	if _, err := os.Stat(layerFile); err == nil {
		t.Fatal("a lazy pull stored a layer")
	}
	srvB := startServe(t, b, "--hosts-dir", viaA)

	// A HEAD of the layer B does not hold answers from B's record: nothing
	// is fetched from A and nothing is stored.
	askedA := strings.Count(srvA.stderr.String(), "blobs/"+layer)
	resp, err := http.Head(srvB.URL + "/v2/lab/chain/blobs/" + layer)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if size := idx.Images[0].Layers[1].Size; resp.StatusCode != http.StatusOK || resp.ContentLength != size ||
		resp.Header.Get("Docker-Content-Digest") != layer {
		t.Fatalf("HEAD of a layer B has not fetched: %s, length %d (want %d), digest %q", resp.Status, resp.ContentLength, size, resp.Header.Get("Docker-Content-Digest"))
	}
	if _, err := os.Stat(layerFile); err == nil {
		t.Fatal("a HEAD made B fetch the layer")
	}
	if n := strings.Count(srvA.stderr.String(), "blobs/"+layer); n != askedA {
		t.Fatalf("a HEAD on B asked A for the layer (%d requests, %d before)", n, askedA)
	}

	c := newCLI(t)
	c.OK(nil, "image", "pull", "--hosts-dir", mirrorHosts(t, reg.Host, srvB.URL), "--platform", "linux/amd64", "-q", ref)
	c.OK(nil, "content", "verify")
	have := c.OK(nil, "content", "ls", "-q")
	for _, l := range idx.Images[0].Layers {
		if !strings.Contains(have, l.Digest.String()) {
			t.Errorf("C lacks layer %s", l.Digest)
		}
	}
	// B fetched the layers from A while serving them, and keeps them.
	if !strings.Contains(srvB.stderr.String(), "pulling through from upstream") {
		t.Errorf("B did not stream a layer while fetching it:\n%s", srvB.stderr)
	}
	if !strings.Contains(srvA.stderr.String(), "blobs/"+layer) {
		t.Errorf("A was not asked for layer %s:\n%s", layer, srvA.stderr)
	}
	if _, err := os.Stat(layerFile); err != nil {
		t.Errorf("B did not keep the layer it fetched: %v", err)
	}
}

// TestServeTLS: casfs serve with TLS and client certificates: a client
// without a certificate is refused, one with a certificate the CA signed
// reads, and a casfs pulls through it as an mTLS hosts.toml mirror. Plain
// HTTP beyond loopback and half a TLS setup are misuse.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	ca, err := testenv.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{"ca.crt": ca.CertPEM}
	if files["server.crt"], files["server.key"], err = ca.ServerCert("127.0.0.1", "localhost"); err != nil {
		t.Fatal(err)
	}
	if files["client.cert"], files["client.key"], err = ca.ClientCert("node-b"); err != nil {
		t.Fatal(err)
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	for name, b := range files {
		if err := os.WriteFile(path(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/tls", "1", img)
	a := newCLI(t)
	a.OK(nil, "image", "pull", "--plain-http", "--no-unpack", "-q", ref)
	reg.Stop()
	a.Fail(2, nil, []string{"serve", "--tls-cert", path("server.crt")}, "--tls-cert and --tls-key go together")
	a.Fail(2, nil, []string{"serve", "--tls-client-ca", path("ca.crt")}, "--tls-client-ca needs --tls-cert")
	srv := startServe(t, a, "--tls-cert", path("server.crt"), "--tls-key", path("server.key"), "--tls-client-ca", path("ca.crt"))
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("served at %s, want https", srv.URL)
	}

	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	if resp, err := noCert.Get(srv.URL + "/v2/"); err == nil {
		resp.Body.Close()
		t.Fatalf("a client without a certificate got %s", resp.Status)
	}
	pair, err := tls.X509KeyPair(files["client.cert"], files["client.key"])
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}}}}
	if code, _, b := httpGet(t, withCert, srv.URL+"/v2/lab/tls/manifests/1"); code != 200 || digest.FromBytes(b) != img.Manifest.Digest {
		t.Fatalf("with a client certificate: %d, manifest %s", code, digest.FromBytes(b))
	}

	hosts := writeHosts(t, reg.Host, fmt.Sprintf("\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %q\n  client = [[%q, %q]]\n",
		srv.URL, path("ca.crt"), path("client.cert"), path("client.key")))
	b := newCLI(t)
	b.OK(nil, "image", "pull", "--hosts-dir", hosts, "--no-unpack", "-q", ref)
	b.OK(nil, "content", "verify")
	if out := b.OK(nil, "image", "ls", "-q"); !strings.Contains(out, ref) {
		t.Fatalf("pull through the mTLS mirror recorded %q", out)
	}
}

// TestMountServe: casfs mount --serve mounts and serves from one process;
// SIGTERM unmounts, stops serving and exits 0.
func TestMountServe(t *testing.T) {
	t.Parallel()
	testenv.RequireFUSE(t)
	c := newCLI(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/both", "1", img)
	c.OK(nil, "image", "pull", "--plain-http", "--no-unpack", "-q", ref)
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	host := "127.0.0.1:" + itoa(testenv.FreePort(t))
	srv := startServing(t, c, "mount", "--serve", host, mnt)
	t.Cleanup(func() {
		if mounted(mnt, "fuse.casfs") {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	if srv.URL != "http://"+host {
		t.Fatalf("serving at %q, want http://%s", srv.URL, host)
	}
	if !mounted(mnt, "fuse.casfs") {
		t.Fatal("not mounted while serving")
	}
	cfg := img.Config.Digest
	got, err := os.ReadFile(filepath.Join(mnt, "blobs", "sha256", cfg.Encoded()))
	if err != nil || digest.FromBytes(got) != cfg {
		t.Fatalf("config through the mount: %v", err)
	}
	if code, _, b := httpGet(t, http.DefaultClient, srv.URL+"/v2/lab/both/blobs/"+cfg.String()); code != 200 || digest.FromBytes(b) != cfg {
		t.Fatalf("config through the registry: %d", code)
	}
	if code := srv.stop(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, srv.stderr)
	}
	if mounted(mnt, "fuse.casfs") {
		t.Error("still mounted after SIGTERM")
	}
	if _, err := http.Get(srv.URL + "/v2/"); err == nil {
		t.Error("still serving after SIGTERM")
	}
	c.OK(nil, "content", "ls", "-q") // the store is released
}

// TestServeMisuse: a wrong command line is exit 2, an address in use exit 1,
// each with one line that says why.
func TestServeMisuse(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.Fail(2, nil, []string{"serve", "extra"}, "wrong number of arguments")
	c.Fail(2, nil, []string{"serve", "--addr", "5050"}, "want HOST:PORT")
	c.Fail(2, nil, []string{"serve", "--addr", "0.0.0.0:1"}, "needs --tls-cert and --tls-key, or --insecure")
	c.Fail(2, nil, []string{"mount", "--serve", "0.0.0.0:1", t.TempDir()}, "needs --tls-cert and --tls-key, or --insecure")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	c.Fail(1, nil, []string{"serve", "--addr", taken.Addr().String()}, "listen on "+taken.Addr().String(), "address already in use")
	c.Fail(1, nil, []string{"serve", "--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"}, "load tls certificate /nonexistent.crt")
}
