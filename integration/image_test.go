package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// busyboxBase is a base layer with the machine's static busybox as its shell.
func busyboxBase(t *testing.T) []testimage.File {
	t.Helper()
	testenv.Require(t, "busybox")
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	return []testimage.File{
		testimage.Dir("bin", 0o755), testimage.Dir("etc", 0o755), testimage.Dir("tmp", os.ModeSticky|0o777),
		testimage.Dir("proc", 0o555), testimage.Dir("dev", 0o755), testimage.Dir("sys", 0o555),
		{Path: "bin/busybox", Mode: 0o755, Data: data},
		testimage.Symlink("bin/sh", "busybox"), testimage.Symlink("bin/cat", "busybox"), testimage.Symlink("bin/ls", "busybox"),
		testimage.Reg("etc/motd", 0o644, "base layer\n"),
		testimage.Reg("etc/gone", 0o644, "deleted by layer 2\n"),
	}
}

// busyboxImage builds a runnable image from the machine's static busybox:
// a base layer with the shell, a second layer that adds and deletes files.
func busyboxImage(t *testing.T) *testimage.Image {
	t.Helper()
	base := busyboxBase(t)
	top := []testimage.File{
		testimage.Dir("etc", 0o755),
		testimage.Reg("etc/motd", 0o644, "hello from casfs\n"),
		testimage.Whiteout("etc", "gone"),
		{Path: "usr/bin/passwd-like", Mode: os.ModeSetuid | 0o755, Data: []byte("#!/bin/sh\n")},
	}
	img, err := testimage.Build(testimage.ImageSpec{
		Layers: []testimage.Layer{{Files: base}, {Files: top, Compression: "zstd"}},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func pushTestImage(t *testing.T, reg *testenv.Registry, repo, tag string, img *testimage.Image) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testimage.Push(ctx, reg.URL, repo, tag, img.Blobs, img.Manifest, reg.Client()); err != nil {
		t.Fatal(err)
	}
	return reg.Ref(repo, tag)
}

// mountCASFS mounts the store in the background and unmounts it when the test ends.
func mountCASFS(t *testing.T, c *cli, args ...string) string {
	t.Helper()
	testenv.RequireFUSE(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.MkdirAll(mnt, 0o755)
	// mount refuses a --root that does not exist (a typo must not start a new store).
	os.MkdirAll(c.Root, 0o711)
	c.OK(nil, append(append([]string{"mount", "-d"}, args...), mnt)...)
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

func unmount(t *testing.T, mnt string) {
	if err := exec.Command("umount", mnt).Run(); err != nil {
		exec.Command("umount", "-l", mnt).Run()
	}
	// The daemon exits once unmounted; wait (bounded) for it to release the socket.
	deadline := time.Now().Add(cmdTimeout)
	for time.Now().Before(deadline) {
		if out, _ := exec.Command("pgrep", "-f", "notify-fd 3.*"+mnt).Output(); len(out) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("casfs daemon for %s still running after unmount", mnt)
}

func TestPullMountRun(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/busybox", "1", img)

	c := newCLI(t)
	out := c.OK(nil, "image", "pull", "--plain-http", ref)
	if !strings.Contains(out, img.Manifest.Digest.String()) {
		t.Fatalf("pull output lacks the manifest digest:\n%s", out)
	}
	if got := strings.TrimSpace(c.OK(nil, "image", "ls", "-q")); got != ref {
		t.Fatalf("image ls -q = %q, want %q", got, ref)
	}
	var detail struct {
		Name   string          `json:"name"`
		Config json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal([]byte(c.OK(nil, "image", "info", ref)), &detail); err != nil || detail.Name != ref {
		t.Fatalf("image info: %+v %v", detail, err)
	}

	mnt := mountCASFS(t, c)
	imgDir := filepath.Join(mnt, "images", reg.Host, "lab", "busybox", "1")
	cfg, err := os.ReadFile(filepath.Join(imgDir, "config.json"))
	if err != nil || string(cfg) != string(img.ConfigBytes()) {
		t.Fatalf("config.json through the mount: %v (%d bytes)", err, len(cfg))
	}
	if d, _ := os.ReadFile(filepath.Join(imgDir, "digest")); strings.TrimSpace(string(d)) != img.Manifest.Digest.String() {
		t.Fatalf("digest file = %q", d)
	}
	rootfs, err := filepath.EvalSymlinks(filepath.Join(imgDir, "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "etc", "motd")); err != nil || string(b) != "hello from casfs\n" {
		t.Fatalf("motd through rootfs: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "etc", "gone")); !os.IsNotExist(err) {
		t.Fatalf("whited-out file visible in rootfs: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(rootfs, "usr", "bin", "passwd-like")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("setuid bit lost: %v %v", fi, err)
	}

	// A tag and a pull through the socket while mounted show in the mount at once.
	c.OK(nil, "image", "tag", ref, reg.Host+"/lab/busybox:2")
	if _, err := os.Stat(filepath.Join(mnt, "images", reg.Host, "lab", "busybox", "2", "config.json")); err != nil {
		t.Fatalf("new tag not visible in the live mount: %v", err)
	}
	other := pushTestImage(t, reg, "lab/other", "7", img)
	c.OK(nil, "image", "pull", "--plain-http", "-q", other)
	if _, err := os.Stat(filepath.Join(mnt, "images", reg.Host, "lab", "other", "7", "rootfs", "etc", "motd")); err != nil {
		t.Fatalf("image pulled through the socket not visible in the live mount: %v", err)
	}

	out = runcRun(t, rootfs, "/bin/sh", "-c", "cat /etc/motd; ls /etc")
	if out != "hello from casfs\nmotd\n" {
		t.Fatalf("runc output %q", out)
	}
}

// runcRun runs args in a container whose read-only root is rootfs, with a
// tmpfs /tmp, and returns its stdout.
func runcRun(t *testing.T, rootfs string, args ...string) string {
	t.Helper()
	testenv.Require(t, "runc")
	bundle := t.TempDir()
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"user": map[string]any{"uid": 0, "gid": 0}, "args": args, "cwd": "/",
			"env": []string{"PATH=/bin:/usr/bin"}, "noNewPrivileges": true,
		},
		"root":     map[string]any{"path": rootfs, "readonly": true},
		"hostname": "casfs",
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc"},
			{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "nodev", "mode=1777"}},
		},
		"linux": map[string]any{
			"namespaces": []map[string]any{{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}},
		},
	}
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("casfs-test-%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "runc", "--root", filepath.Join(bundle, "state"), "run", "--bundle", bundle, id)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	exec.Command("runc", "--root", filepath.Join(bundle, "state"), "delete", "-f", id).Run()
	if err != nil {
		t.Fatalf("runc run: %v\nstderr: %s", err, stderr.String())
	}
	return stdout.String()
}

// A name pinned by digest must carry the image's own digest; labels with
// control characters (which could fake rows of a listing) are refused.
func TestTagPinnedNameAndLabelControls(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/pin", "1", img)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--no-unpack", "--plain-http", ref)

	other := img.Config.Digest
	c.Fail(1, nil, []string{"image", "tag", ref, reg.Host + "/lab/pin@" + other.String()}, "pins "+other.String(), "digest mismatch")
	pinned := reg.Host + "/lab/pin@" + img.Manifest.Digest.String()
	c.OK(nil, "image", "tag", ref, pinned)
	names := c.OK(nil, "image", "ls", "-q")
	if !strings.Contains(names, pinned) || strings.Contains(names, other.String()) {
		t.Fatalf("names after tagging: %q", names)
	}

	c.Fail(2, nil, []string{"content", "label", img.Config.Digest.String(), "note=a\nsha256:fake 1 B"}, "control character")
	c.Fail(2, nil, []string{"lease", "create", "--label", "k=\x1b[31mred"}, "control character")
	c.OK(nil, "content", "label", img.Config.Digest.String(), "note=fine")
}

// image label sets and removes labels of an image record (ctr images
// label); image info and filtered image ls show them.
func TestImageLabel(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ref := pushTestImage(t, reg, "lab/labelled", "1", busyboxImage(t))
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--no-unpack", "--plain-http", ref)

	if got := strings.TrimSpace(c.OK(nil, "image", "label", ref, "team=blue", "env=prod")); got != "env=prod,team=blue" {
		t.Fatalf("image label printed %q, want env=prod,team=blue", got)
	}
	if got := strings.TrimSpace(c.OK(nil, "image", "label", ref, "env-")); got != "team=blue" {
		t.Fatalf("after removing env: %q, want team=blue", got)
	}
	var info struct {
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(c.OK(nil, "image", "info", ref)), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Labels) != 1 || info.Labels["team"] != "blue" {
		t.Fatalf("image info labels = %v, want team=blue", info.Labels)
	}
	if got := strings.TrimSpace(c.OK(nil, "image", "ls", "-q", `labels."team"==blue`)); got != ref {
		t.Fatalf("image ls by label = %q, want %s", got, ref)
	}
	c.Fail(2, nil, []string{"image", "label", ref, "note=a\nfake row"}, "control character")
	c.Fail(2, nil, []string{"image", "label", ref, "novalue"}, "want key=value to set or key- to remove")
	c.Fail(1, nil, []string{"image", "label", reg.Host + "/lab/absent:1", "a=b"}, "not found")
}
