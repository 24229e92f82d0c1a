package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// TestPushPullRoundTrip: casfs pushes what it pulled to another repository,
// skopeo reads it back with the same digest, and casfs pulls what skopeo pushed.
func TestPushPullRoundTrip(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "skopeo")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/src", "1", img)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "--no-unpack", "-q", ref)

	dst := reg.Ref("lab/copy", "2")
	push := c.Run(nil, "image", "push", "--plain-http", ref, dst)
	if push.Code != 0 || push.Stdout != "" || !strings.Contains(push.Stderr, "total:") {
		t.Errorf("push: exit %d, want 0, nothing on stdout and progress with a total line on stderr:\nstdout: %s\nstderr: %s", push.Code, push.Stdout, push.Stderr)
	}
	raw, err := exec.Command("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+dst).Output()
	if err != nil || string(raw) != string(img.ManifestBytes()) {
		t.Fatalf("skopeo inspect of casfs's push: %v, manifest differs: %v", err, string(raw) != string(img.ManifestBytes()))
	}
	oci := filepath.Join(t.TempDir(), "oci")
	if out, err := exec.Command("skopeo", "copy", "--src-tls-verify=false", "docker://"+dst, "oci:"+oci+":x").CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy to oci: %v: %s", err, out)
	}
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	b, _ := os.ReadFile(filepath.Join(oci, "index.json"))
	if json.Unmarshal(b, &idx); len(idx.Manifests) != 1 || idx.Manifests[0].Digest != img.Manifest.Digest.String() {
		t.Fatalf("skopeo's copy has %s, want %s", b, img.Manifest.Digest)
	}

	// skopeo pushes, casfs pulls.
	back := reg.Ref("lab/skopeo", "3")
	if out, err := exec.Command("skopeo", "copy", "--dest-tls-verify=false", "oci:"+oci+":x", "docker://"+back).CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy to registry: %v: %s", err, out)
	}
	c2 := newCLI(t)
	out := c2.OK(nil, "image", "pull", "--plain-http", back)
	if !strings.Contains(out, back+": "+img.Manifest.Digest.String()) {
		t.Fatalf("pull of skopeo's push:\n%s", out)
	}
	c2.OK(nil, "content", "verify")
}

func TestPullErrors(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	pushTestImage(t, reg, "lab/x", "1", img)
	c := newCLI(t)
	c.OK(strings.NewReader("keep"), "content", "ingest", "-q", "keep")
	before := c.OK(nil, "content", "ls", "-q")

	c.Fail(1, nil, []string{"image", "pull", "--plain-http", reg.Ref("lab/x", "nope")}, "not found")
	c.Fail(1, nil, []string{"image", "pull", "--plain-http", reg.Ref("lab/none", "1")}, "not found")
	c.Fail(2, nil, []string{"image", "pull", "--plain-http", "UPPER/Case:tag!"}, "not a valid image reference")
	c.Fail(2, nil, []string{"image", "pull", "--platform", "linux/amd64", "--all-platforms", "x"}, "exclude each other")
	c.Fail(2, nil, []string{"image", "pull", "--user", "bob", "x"}, "not a terminal")
	dead := testenv.FreePort(t)
	c.Fail(1, nil, []string{"image", "pull", "--plain-http", "127.0.0.1:" + itoa(dead) + "/lab/x:1"}, "127.0.0.1:"+itoa(dead))
	bad := t.TempDir()
	os.MkdirAll(filepath.Join(bad, reg.Host), 0o755)
	os.WriteFile(filepath.Join(bad, reg.Host, "hosts.toml"), []byte("server = \"http://"+reg.Host+"\"\n[host.\n"), 0o644)
	c.Fail(1, nil, []string{"image", "pull", "--hosts-dir", bad, reg.Ref("lab/x", "1")}, "hosts.toml:2")
	if after := c.OK(nil, "content", "ls", "-q"); after != before {
		t.Fatalf("failed pulls changed the store:\n%s\nvs\n%s", before, after)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func pushAuthed(t *testing.T, reg *testenv.Registry, repo, tag string, img *testimage.Image) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := testimage.PushOptions{Username: reg.Username, Password: reg.Password}
	if err := testimage.Push(ctx, reg.URL, repo, tag, img.Blobs, img.Manifest, reg.Client(), opts); err != nil {
		t.Fatal(err)
	}
}

// TestPullTLSAuth: a registry behind TLS with a private CA and htpasswd,
// reached through hosts.toml (ca) and --user; wrong credentials fail.
func TestPullTLSAuth(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{TLS: true, Auth: true})
	img := busyboxImage(t)
	pushAuthed(t, reg, "lab/secure", "1", img)

	hosts := t.TempDir()
	os.MkdirAll(filepath.Join(hosts, reg.Host), 0o755)
	toml := "server = \"https://" + reg.Host + "\"\n[host.\"https://" + reg.Host + "\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  ca = \"" + reg.CACertPath + "\"\n"
	os.WriteFile(filepath.Join(hosts, reg.Host, "hosts.toml"), []byte(toml), 0o644)

	c := newCLI(t)
	ref := reg.Ref("lab/secure", "1")
	r := c.Fail(1, nil, []string{"image", "pull", "--hosts-dir", hosts, "--user", reg.Username + ":wrong", ref}, "unauthorized")
	if strings.Contains(r.Stderr, "wrong") {
		t.Fatalf("the password appears in the error: %s", r.Stderr)
	}
	c.Fail(1, nil, []string{"image", "pull", "--hosts-dir", t.TempDir(), "--user", reg.Username + ":" + reg.Password, ref}, "certificate")
	out := c.OK(nil, "image", "pull", "--hosts-dir", hosts, "--user", reg.Username+":"+reg.Password, ref)
	if !strings.Contains(out, img.Manifest.Digest.String()) {
		t.Fatalf("pull over TLS with auth:\n%s", out)
	}
}

// TestPullTokenRealmElsewhere: --user credentials are not sent to a plain-HTTP
// token realm on another host: the pull fails with exit 1 and one line
// naming the realm, and the realm never sees them. A realm on the
// registry's own host:port gets them and the pull succeeds.
func TestPullTokenRealmElsewhere(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	pushAuthed(t, reg, "lab/realm", "1", img)
	gate := testenv.StartTokenGate(t, reg)

	c := newCLI(t)
	c.Env = append(c.Env, "DOCKER_CONFIG="+t.TempDir())
	ref := gate.Host + "/lab/realm:1"
	args := []string{"image", "pull", "--plain-http", "--hosts-dir", t.TempDir(), "--user", "alice:s3cret", ref}
	r := c.Fail(1, nil, args, "token realm "+gate.ElsewhereURL+" is plain HTTP on another host than registry "+gate.Host)
	if strings.Contains(r.Stderr, "s3cret") {
		t.Fatalf("the password appears in the error: %s", r.Stderr)
	}
	if hits, auths := gate.Elsewhere.Seen(); hits != 0 || len(auths) != 0 {
		t.Fatalf("realm elsewhere got %d requests, Authorization %q", hits, auths)
	}

	gate.UseRealm(false)
	if out := c.OK(nil, args...); !strings.Contains(out, img.Manifest.Digest.String()) {
		t.Fatalf("pull through the same-host realm:\n%s", out)
	}
	if _, auths := gate.SameHost.Seen(); len(auths) == 0 || auths[0] != "Basic YWxpY2U6czNjcmV0" {
		t.Fatalf("same-host realm got Authorization %q", auths)
	}
}

// TestContentFetch: all content of an image, no image record, no snapshots.
func TestContentFetch(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/fetch", "1", img)
	c := newCLI(t)
	out := c.OK(nil, "content", "fetch", "--plain-http", ref)
	if !strings.Contains(out, ref+": "+img.Manifest.Digest.String()) {
		t.Fatalf("content fetch printed:\n%s", out)
	}
	have := c.OK(nil, "content", "ls", "-q")
	for d := range img.Blobs {
		if !strings.Contains(have, d.String()) {
			t.Errorf("blob %s not fetched", d)
		}
	}
	if got := c.OK(nil, "image", "ls", "-q"); got != "" {
		t.Fatalf("content fetch recorded an image: %q", got)
	}
	if got := c.OK(nil, "snapshot", "ls", "-q"); got != "" {
		t.Fatalf("content fetch unpacked: %q", got)
	}
	c.OK(nil, "content", "verify")
}

// TestRegistryTLSFlags: ctr's --tlscacert, --tlscert, --tlskey and
// -k/--skip-verify reach a registry that requires a client certificate, on
// pull, push and content fetch, with no hosts.toml; they win over a
// hosts.toml whose CA file does not exist.
func TestRegistryTLSFlags(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{ClientCA: true})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/tls", "1", img)
	c := newCLI(t)
	empty := t.TempDir()
	client := []string{"--tlscert", reg.ClientCertPath, "--tlskey", reg.ClientKeyPath}

	c.Fail(1, nil, []string{"image", "pull", "--hosts-dir", empty, ref}, "certificate")
	c.Fail(1, nil, []string{"image", "pull", "--hosts-dir", empty, "--tlscacert", reg.CACertPath, ref}, ref)
	c.Fail(2, nil, []string{"image", "pull", "--hosts-dir", empty, "--tlskey", reg.ClientKeyPath, ref}, "--tlskey needs --tlscert")
	c.Fail(2, nil, []string{"image", "pull", "--hosts-dir", empty, "--tlscacert", filepath.Join(empty, "none.crt"), ref}, "--tlscacert", "none.crt")

	out := c.OK(nil, append(append([]string{"image", "pull", "--hosts-dir", empty, "--tlscacert", reg.CACertPath}, client...), ref)...)
	if !strings.Contains(out, img.Manifest.Digest.String()) {
		t.Fatalf("pull with --tlscacert and a client certificate:\n%s", out)
	}

	// -k instead of the CA, on push; the hosts.toml's missing CA is overruled.
	hosts := t.TempDir()
	os.MkdirAll(filepath.Join(hosts, reg.Host), 0o755)
	os.WriteFile(filepath.Join(hosts, reg.Host, "hosts.toml"), []byte("ca = \"missing.crt\"\n"), 0o644)
	pushed := reg.Ref("lab/tls-pushed", "1")
	c.OK(nil, append(append([]string{"image", "push", "--hosts-dir", hosts, "-k"}, client...), ref, pushed)...)

	other := newCLI(t)
	out = other.OK(nil, append(append([]string{"content", "fetch", "--hosts-dir", empty, "--tlscacert", reg.CACertPath}, client...), pushed)...)
	if !strings.Contains(out, img.Manifest.Digest.String()) {
		t.Fatalf("content fetch of the pushed image:\n%s", out)
	}
}

// TestRegistryConfigToml: containerd's config.toml registry section given
// with --config: configs."host".auth logs in to an htpasswd registry (with
// a warning when the file is readable by others, and the password in no
// output), and mirrors."host".endpoint serves a namespace that has no
// registry of its own.
func TestRegistryConfigToml(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Auth: true})
	img := gcTestImage(t, "config-toml")
	pushAuthed(t, reg, "lab/conf", "1", img)
	mirror := testenv.StartRegistry(t, testenv.RegistryOptions{})
	pushTestImage(t, mirror, "lab/mirrored", "1", img)

	dir := t.TempDir()
	conf := filepath.Join(dir, "config.toml")
	body := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n" +
		"  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"mirrored.example\"]\n" +
		"    endpoint = [\"http://" + mirror.Host + "\"]\n" +
		"  [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"" + reg.Host + "\".auth]\n" +
		"    username = \"" + reg.Username + "\"\n    password = \"" + reg.Password + "\"\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t)
	c.Env = append(c.Env, "DOCKER_CONFIG="+t.TempDir())
	ref := reg.Ref("lab/conf", "1")
	args := []string{"image", "pull", "--plain-http", "--hosts-dir", t.TempDir(), "--no-unpack"}

	c.Fail(1, nil, append(args, ref), "unauthorized")
	r := c.Run(nil, append(args, "--config", conf, ref)...)
	if r.Code != 0 || !strings.Contains(r.Stdout, img.Manifest.Digest.String()) || strings.Contains(r.Stderr, "readable") {
		t.Fatalf("pull with config.toml auth: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}

	os.Chmod(conf, 0o644)
	r = c.Run(nil, append(args, "--config", conf, ref)...)
	if r.Code != 0 || !strings.Contains(r.Stderr, conf+" holds registry passwords and is readable by others") {
		t.Fatalf("world-readable config.toml: exit %d, want 0 and a warning\nstderr: %s", r.Code, r.Stderr)
	}
	if strings.Contains(r.Stdout+r.Stderr, reg.Password) {
		t.Fatalf("the password appears in the output:\n%s%s", r.Stdout, r.Stderr)
	}

	// The mirror answers for a namespace nothing else serves; CASFS_CONFIG names the file too.
	c.Env = append(c.Env, "CASFS_CONFIG="+conf)
	out := c.OK(nil, "image", "pull", "--hosts-dir", t.TempDir(), "--no-unpack", "mirrored.example/lab/mirrored:1")
	if !strings.Contains(out, img.Manifest.Digest.String()) {
		t.Fatalf("pull through the config.toml mirror:\n%s", out)
	}
	c.Fail(1, nil, []string{"image", "pull", "--config", filepath.Join(dir, "none.toml"), ref}, "none.toml")
}
