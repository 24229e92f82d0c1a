package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// readAsNobody reads path as uid/gid 65534 and returns what it read, or
// the error.
func readAsNobody(t *testing.T, path string) (string, error) {
	t.Helper()
	cmd := exec.Command("cat", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	return string(out), err
}

// openToOthers lets other users traverse dir and its parents up to the
// test's temporary folder (t.TempDir makes them 0700).
func openToOthers(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
}

// A layer blob holds files the image keeps from other users: no other user
// reads blobs from the store's folder, nor blobs, manifests and configs
// through an allow_other mount, while rootfs/ keeps each file's own mode.
// --public-blobs opens the mount's blobs.
func TestOtherUsersCannotReadBlobs(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img, err := testimage.Build(testimage.ImageSpec{
		Layers: []testimage.Layer{{Files: []testimage.File{
			testimage.Dir("etc", 0o755),
			testimage.Reg("etc/motd", 0o644, "for everyone\n"),
			testimage.Reg("etc/shadow", 0o600, "root:SECRET-HASH:19000::::::\n"),
		}, Compression: "none"}},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ref := pushTestImage(t, reg, "lab/secret", "1", img)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--plain-http", ref)
	openToOthers(t, c.Root)
	layer := img.Layers[0].Digest.Encoded()

	if got, err := readAsNobody(t, filepath.Join(c.Root, "blobs", "sha256", layer)); err == nil || strings.Contains(got, "SECRET") {
		t.Fatalf("another user read the layer blob from the store: %v %q", err, got)
	}
	for _, p := range []string{"ingest", "meta", "snapshots", "blobs"} {
		fi, err := os.Stat(filepath.Join(c.Root, p))
		if err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v %v, want no access for others", p, fi.Mode(), err)
		}
	}

	for _, public := range []bool{false, true} {
		args := []string{"-o", "allow_other"}
		if public {
			args = append(args, "--public-blobs")
		}
		mnt := mountCASFS(t, c, args...)
		openToOthers(t, filepath.Dir(mnt))
		imgDir := filepath.Join(mnt, "images", reg.Host, "lab", "secret", "1")
		for _, p := range []string{
			filepath.Join(mnt, "blobs", "sha256", layer),
			filepath.Join(imgDir, "layers", "0"),
			filepath.Join(imgDir, "manifest.json"),
			filepath.Join(imgDir, "config.json"),
		} {
			got, err := readAsNobody(t, p)
			if public != (err == nil) {
				t.Errorf("public=%v: another user reading %s: %v", public, strings.TrimPrefix(p, mnt), err)
			}
			if !public && strings.Contains(got, "SECRET") {
				t.Errorf("another user read the secret through %s", p)
			}
		}
		if got, err := readAsNobody(t, filepath.Join(imgDir, "rootfs", "etc", "motd")); err != nil || got != "for everyone\n" {
			t.Errorf("public=%v: another user reading rootfs/etc/motd: %q %v", public, got, err)
		}
		if got, err := readAsNobody(t, filepath.Join(imgDir, "rootfs", "etc", "shadow")); err == nil {
			t.Errorf("public=%v: another user read rootfs/etc/shadow: %q", public, got)
		}
		if b, err := os.ReadFile(filepath.Join(mnt, "blobs", "sha256", layer)); err != nil || !strings.Contains(string(b), "SECRET") {
			t.Errorf("root reading the layer blob: %v", err)
		}
		unmount(t, mnt)
	}
}
