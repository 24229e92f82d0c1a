package integration

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// dockerConfigFor writes a docker config.json that logs in to each host
// as reg's htpasswd user, and returns its folder (for DOCKER_CONFIG).
func dockerConfigFor(t *testing.T, reg *testenv.Registry, hosts ...string) string {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))
	var entries []string
	for _, h := range hosts {
		entries = append(entries, `"`+h+`":{"auth":"`+auth+`"}`)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{`+strings.Join(entries, ",")+`}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// daemonWithoutCredentials mounts c's store with a daemon whose
// environment has no docker credentials (DOCKER_CONFIG an empty folder),
// then gives c's later commands callerConfig as theirs.
func daemonWithoutCredentials(t *testing.T, c *cli, callerConfig string, args ...string) string {
	t.Helper()
	c.Env = append(c.Env, "DOCKER_CONFIG="+t.TempDir())
	mnt := mountCASFS(t, c, args...)
	c.Env = append(c.Env, "DOCKER_CONFIG="+callerConfig)
	return mnt
}

// assertNoSecret fails when the daemon's log or any of outputs holds secret.
func assertNoSecret(t *testing.T, c *cli, secret string, outputs ...string) {
	t.Helper()
	log, err := os.ReadFile(filepath.Join(c.Root, "casfs.log"))
	if err != nil {
		t.Fatalf("daemon log: %v", err)
	}
	if strings.Contains(string(log)+strings.Join(outputs, ""), secret) {
		t.Fatalf("the password appears in the daemon's log or a command's output")
	}
}

// deadHostsDir is a hosts directory that sends the namespace host to a
// port nothing listens on: a daemon that read it could not reach host.
func deadHostsDir(t *testing.T, host string) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, host), 0o755)
	if err := os.WriteFile(filepath.Join(dir, host, "hosts.toml"), []byte("server = \"http://127.0.0.1:1\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDaemonCallerCredentialsPushRepairExport: push, check --repair, and
// an export and a convert that fetch a lazily pulled image's layers, each through the
// socket of a daemon without credentials, log in with the caller's docker
// credentials; the password shows nowhere.
func TestDaemonCallerCredentialsPushRepairExport(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Auth: true})
	img := gcTestImage(t, "repaired")
	lazyImg := gcTestImage(t, "exported")
	convImg := gcTestImage(t, "converted")
	pushAuthed(t, reg, "lab/creds", "1", img)
	pushAuthed(t, reg, "lab/creds-lazy", "1", lazyImg)
	pushAuthed(t, reg, "lab/creds-conv", "1", convImg)
	ref, lazyRef, convRef := reg.Ref("lab/creds", "1"), reg.Ref("lab/creds-lazy", "1"), reg.Ref("lab/creds-conv", "1")
	user := reg.Username + ":" + reg.Password

	// Without a daemon: one image whole (then a layer removed by force),
	// two lazily (layers recorded, not fetched).
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--plain-http", "--no-unpack", "--user", user, ref)
	c.OK(nil, "image", "pull", "-q", "--plain-http", "--lazy", "--user", user, lazyRef)
	c.OK(nil, "image", "pull", "-q", "--plain-http", "--lazy", "--user", user, convRef)
	layer, lazyLayer := img.Layers[0].Digest, lazyImg.Layers[0].Digest
	c.OK(nil, "content", "rm", "--force", layer.String())

	daemonWithoutCredentials(t, c, dockerConfigFor(t, reg, reg.Host))
	var outputs []string
	run := func(args ...string) string {
		t.Helper()
		r := c.Run(nil, args...)
		outputs = append(outputs, r.Stdout, r.Stderr)
		if r.Code != 0 {
			t.Fatalf("casfs %s through the daemon: exit %d\n%s%s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
		}
		return r.Stdout
	}

	out := run("check", "--repair", "--plain-http")
	if want := "repaired: blob " + layer.String() + ": fetched again from its registry"; !strings.Contains(out, want) {
		t.Fatalf("check --repair through the daemon does not say %q:\n%s", want, out)
	}
	if got := c.OK(nil, "content", "get", layer.String()); got != string(img.Blobs[layer]) {
		t.Fatalf("layer after repair: %d bytes, want %d", len(got), len(img.Blobs[layer]))
	}

	tar := filepath.Join(t.TempDir(), "lazy.tar")
	run("image", "export", "--plain-http", tar, lazyRef)
	if got := c.OK(nil, "content", "get", lazyLayer.String()); got != string(lazyImg.Blobs[lazyLayer]) {
		t.Fatalf("lazy layer after export: %d bytes, want %d", len(got), len(lazyImg.Blobs[lazyLayer]))
	}

	run("image", "convert", "--oci", "--plain-http", convRef, "lab/converted:1")
	if got := c.OK(nil, "content", "get", convImg.Layers[0].Digest.String()); got != string(convImg.Blobs[convImg.Layers[0].Digest]) {
		t.Fatalf("lazy layer after convert: %d bytes, want %d", len(got), len(convImg.Blobs[convImg.Layers[0].Digest]))
	}

	run("image", "push", "--plain-http", ref, reg.Ref("lab/pushed", "2"))
	req, _ := http.NewRequest("HEAD", reg.URL+"/v2/lab/pushed/manifests/2", nil)
	req.SetBasicAuth(reg.Username, reg.Password)
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode != 200 || got != img.Manifest.Digest.String() {
		t.Fatalf("pushed manifest: status %d, digest %q, want 200 and %s", resp.StatusCode, got, img.Manifest.Digest)
	}
	assertNoSecret(t, c, reg.Password, outputs...)
}

// TestDaemonCallerCredentialsMirror: a pull through the socket of an image
// whose namespace the caller's hosts.toml serves from a mirror that needs
// credentials sends the caller's credentials for the mirror too, and the
// daemon's own hosts directory (which knows no mirror) is not read.
func TestDaemonCallerCredentialsMirror(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	mirror := testenv.StartRegistry(t, testenv.RegistryOptions{Auth: true})
	img := gcTestImage(t, "mirrored")
	pushAuthed(t, mirror, "lab/mirrored", "1", img)

	const ns = "upstream.invalid"
	caller := t.TempDir()
	os.MkdirAll(filepath.Join(caller, ns), 0o755)
	toml := "server = \"http://127.0.0.1:1\"\n[host.\"http://" + mirror.Host + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	if err := os.WriteFile(filepath.Join(caller, ns, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t)
	daemonWithoutCredentials(t, c, dockerConfigFor(t, mirror, mirror.Host), "--hosts-dir", deadHostsDir(t, ns))

	ref := ns + "/lab/mirrored:1"
	var outputs []string
	for _, args := range [][]string{
		{"content", "fetch", "--hosts-dir", caller, ref},
		{"image", "pull", "--no-unpack", "--hosts-dir", caller, ref},
	} {
		r := c.Run(nil, args...)
		outputs = append(outputs, r.Stdout, r.Stderr)
		if r.Code != 0 || !strings.Contains(r.Stdout, img.Manifest.Digest.String()) {
			t.Fatalf("casfs %s through the daemon: exit %d\n%s%s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
		}
	}
	if n := mirror.RequestCount("GET", "/manifests/"); n == 0 {
		t.Fatalf("the mirror served no manifest")
	}
	assertNoSecret(t, c, mirror.Password, outputs...)
}

// TestDaemonLazyPullCallerCredentials: the chunk reads of an image pulled
// lazily through the socket happen later in the daemon, with no caller
// present: they log in with the credentials and configuration the pull
// came with, not the daemon's (no credentials, and a hosts directory that
// leads nowhere).
func TestDaemonLazyPullCallerCredentials(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Auth: true})
	rnd := rand.New(rand.NewPCG(15, 3))
	big := make([]byte, 4<<20) // far more than a lazy pull's footer and TOC reads
	for i := range big {
		big[i] = byte(rnd.Uint32())
	}
	img, err := testimage.Build(testimage.ImageSpec{
		Layers: []testimage.Layer{{Files: []testimage.File{
			{Path: "data/big", Mode: 0o644, Data: big},
			testimage.Reg("etc/motd", 0o644, "lazy, as the caller\n"),
		}, Compression: "estargz", ChunkSize: 1 << 20}},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	pushAuthed(t, reg, "lab/lazy-creds", "1", img)
	ref := reg.Ref("lab/lazy-creds", "1")

	c := newCLI(t)
	mnt := daemonWithoutCredentials(t, c, dockerConfigFor(t, reg, reg.Host), "--hosts-dir", deadHostsDir(t, reg.Host), "--fetch-timeout", "20s")
	r := c.Run(nil, "image", "pull", "--plain-http", "--lazy", ref)
	if r.Code != 0 {
		t.Fatalf("lazy pull through the daemon: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	rootfs := filepath.Join(mnt, "images", reg.Host, "lab", "lazy-creds", "1", "rootfs")
	b, err := readWithin(filepath.Join(rootfs, "data", "big"), 90*time.Second)
	if err != nil || !bytes.Equal(b, big) {
		t.Fatalf("read of a lazily pulled file through the mount: %d bytes, %v; want the %d pushed", len(b), err, len(big))
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "etc", "motd")); err != nil || string(b) != "lazy, as the caller\n" {
		t.Fatalf("etc/motd: %q %v", b, err)
	}
	assertNoSecret(t, c, reg.Password, r.Stdout, r.Stderr)
}
