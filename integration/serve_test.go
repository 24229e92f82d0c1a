package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

// startServe runs `casfs serve` on a free loopback port (plus args), waits
// for the line saying where it listens, and stops it with SIGTERM when the
// test ends, failing the test unless it then exits 0.
func startServe(t *testing.T, c *cli, args ...string) *served {
	t.Helper()
	host := "127.0.0.1:" + itoa(testenv.FreePort(t))
	cmd := c.command(nil, append([]string{"--log-level", "debug", "serve", "--addr", host}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &served{Host: host, cmd: cmd, stderr: &lockedBuffer{}, done: make(chan error, 1)}
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
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "server = \"http://%s\"\n", upstream)
	for _, m := range mirrors {
		fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", m)
	}
	os.MkdirAll(filepath.Join(dir, upstream), 0o755)
	if err := os.WriteFile(filepath.Join(dir, upstream, "hosts.toml"), []byte(b.String()), 0o644); err != nil {
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

// TestServeMirrorForCtrAndCasfs: containerd (ctr) and a second casfs pull
// through casfs serve as a hosts.toml mirror while the upstream registry of
// that hosts.toml is down, so every byte came from the peer.
func TestServeMirrorForCtrAndCasfs(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	idx := multiPlatformImage(t)
	ref := pushIndex(t, reg, "lab/app", "1", idx)
	a := newCLI(t)
	a.OK(nil, "image", "pull", "--plain-http", "--all-platforms", "--no-unpack", "-q", ref)
	srv := startServe(t, a)
	reg.Stop()
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
