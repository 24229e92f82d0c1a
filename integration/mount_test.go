package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/testenv"
)

// TestLazyPullThroughMount: a --lazy pull records layers without fetching
// them; reading one through the mount fetches it once for many readers; with
// the registry gone a missing blob fails with EIO and local ones still read.
func TestLazyPullThroughMount(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := busyboxImage(t)
	ref := pushTestImage(t, reg, "lab/lazy", "1", img)

	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "--lazy", "-q", ref)
	for _, l := range img.Layers {
		if _, err := os.Stat(filepath.Join(c.Root, "blobs", "sha256", l.Digest.Encoded())); !os.IsNotExist(err) {
			t.Fatalf("lazy pull fetched layer %s: %v", l.Digest, err)
		}
		if !strings.Contains(c.OK(nil, "content", "ls", "-q"), l.Digest.String()) {
			t.Fatalf("lazy pull did not record layer %s", l.Digest)
		}
	}

	mnt := mountCASFS(t, c, "--fetch-timeout", "10s")
	base := img.Layers[0]
	path := filepath.Join(mnt, "blobs", "sha256", base.Digest.Encoded())
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			b, err := os.ReadFile(path)
			if err == nil && !bytes.Equal(b, img.Blobs[base.Digest]) {
				err = errors.New("bytes differ from the pushed layer")
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("reader %d: %v", i, err)
		}
	}
	if n := reg.RequestCount("GET", "/blobs/"+base.Digest.String()); n != 1 {
		t.Fatalf("16 readers caused %d downloads of %s, want 1", n, base.Digest)
	}

	// The registry goes away: a blob missing on disk fails with EIO (after
	// the fetch fails), while everything local still reads.
	reg.Stop()
	top := img.Layers[1]
	_, err := readWithin(filepath.Join(mnt, "blobs", "sha256", top.Digest.Encoded()), 60*time.Second)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a missing blob with the registry stopped: %v, want EIO", err)
	}
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, img.Blobs[base.Digest]) {
		t.Fatalf("local blob after a failed fetch: %v", err)
	}
	cfg := filepath.Join(mnt, "images", reg.Host, "lab", "lazy", "1", "config.json")
	if b, err := os.ReadFile(cfg); err != nil || !bytes.Equal(b, img.ConfigBytes()) {
		t.Fatalf("config.json after a failed fetch: %v", err)
	}

	// Back again: the same read now succeeds, and the rootfs unpacks on first use.
	reg.Restart(t)
	if b, err := os.ReadFile(filepath.Join(mnt, "blobs", "sha256", top.Digest.Encoded())); err != nil || !bytes.Equal(b, img.Blobs[top.Digest]) {
		t.Fatalf("read after the registry came back: %v", err)
	}
	motd := filepath.Join(mnt, "images", reg.Host, "lab", "lazy", "1", "rootfs", "etc", "motd")
	if b, err := os.ReadFile(motd); err != nil || string(b) != "hello from casfs\n" {
		t.Fatalf("rootfs of a lazy image: %q %v", b, err)
	}
}

// readWithin reads a file, failing the test if the read does not return in d.
func readWithin(path string, d time.Duration) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b, err := os.ReadFile(path)
		ch <- res{b, err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(d):
		return nil, errors.New("read did not return within " + d.String())
	}
}

func TestMountLifecycle(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	c := newCLI(t)
	d := strings.TrimSpace(c.OK(strings.NewReader("mounted blob"), "content", "ingest", "-q", "m"))
	mnt := mountCASFS(t, c)

	// A second daemon on the same root is refused with a clear reason.
	other := filepath.Join(t.TempDir(), "other")
	os.Mkdir(other, 0o755)
	c.Fail(1, nil, []string{"mount", "-d", other}, "is held by process", "(casfs", "which serves its socket: commands go through it")

	// Commands work through the socket while mounted, and show at once.
	d2 := strings.TrimSpace(c.OK(strings.NewReader("second"), "content", "ingest", "-q", "m2"))
	for _, dg := range []string{d, d2} {
		fi, err := os.Stat(filepath.Join(mnt, "blobs", "sha256", strings.TrimPrefix(dg, "sha256:")))
		if err != nil {
			t.Fatalf("blob %s not in the mount: %v", dg, err)
		}
		// A blob's mtime is its record's time.
		var info struct {
			CreatedAt time.Time `json:"createdAt"`
		}
		if err := json.Unmarshal([]byte(c.OK(nil, "content", "info", dg)), &info); err != nil || info.CreatedAt.IsZero() {
			t.Fatalf("content info %s: %+v %v", dg, info, err)
		}
		if !fi.ModTime().Equal(info.CreatedAt) {
			t.Errorf("blob %s: mtime %v in the mount, want its record's %v", dg, fi.ModTime(), info.CreatedAt)
		}
	}
	c.OK(nil, "content", "rm", d2)
	if _, err := os.Stat(filepath.Join(mnt, "blobs", "sha256", strings.TrimPrefix(d2, "sha256:"))); !os.IsNotExist(err) {
		t.Fatalf("removed blob still in the mount: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(c.Root, "casfs.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v", fi, err)
	}
	if !mounted(mnt, "fuse.casfs") {
		t.Fatal("no fuse.casfs mount in /proc/mounts")
	}
}

func mounted(mnt, fstype string) bool {
	b, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[1] == mnt && f[2] == fstype {
			return true
		}
	}
	return false
}

// TestMountForegroundSignals: the foreground daemon (systemd's form)
// unmounts and releases the store on SIGTERM, and tells systemd it is ready.
func TestMountForegroundSignals(t *testing.T) {
	t.Parallel()
	testenv.RequireFUSE(t)
	c := newCLI(t)
	c.OK(strings.NewReader("x"), "content", "ingest", "-q", "x")
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)

	// The unit file's ExecStart, with this test's binary, root and mountpoint.
	unit, err := os.ReadFile("../contrib/casfs.service")
	if err != nil {
		t.Fatal(err)
	}
	var execStart []string
	for _, l := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			execStart = strings.Fields(v)
		}
	}
	if len(execStart) < 2 || execStart[0] != "/usr/local/bin/casfs" || execStart[len(execStart)-1] != "/mnt/cas" {
		t.Fatalf("unexpected ExecStart %q", execStart)
	}
	args := append([]string{"--root", c.Root}, execStart[1:len(execStart)-1]...)
	args = append(args, mnt)

	notifyPath := filepath.Join(t.TempDir(), "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cmd := exec.Command(casfsBin, args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		if mounted(mnt, "fuse.casfs") {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	notify.SetReadDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 256)
	n, err := notify.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("no READY=1 from the daemon: %q %v\n%s", buf[:n], err, stderr.String())
	}
	if !mounted(mnt, "fuse.casfs") {
		t.Fatal("READY=1 before the mount was live")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("daemon did not exit after SIGTERM")
	}
	if mounted(mnt, "fuse.casfs") {
		t.Fatal("still mounted after SIGTERM")
	}
	// The store is released: embedded commands work again.
	c.OK(nil, "content", "ls", "-q")
}

// TestFstab mounts casfs the way /etc/fstab does, through mount(8) and
// mount.fuse3, using a private fstab file.
func TestFstab(t *testing.T) {
	t.Parallel()
	testenv.RequireFUSE(t)
	testenv.Require(t, "mount.fuse3")
	c := newCLI(t)
	d := strings.TrimSpace(c.OK(strings.NewReader("from fstab"), "content", "ingest", "-q", "f"))
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	fstab := filepath.Join(t.TempDir(), "fstab")
	// The form that names the program explicitly works without installing
	// casfs into mount.fuse3's PATH; `fuse.casfs` needs /usr/local/bin/casfs.
	line := casfsBin + "#" + c.Root + "  " + mnt + "  fuse  defaults,allow_other,nofail,x-systemd.automount  0 0\n"
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-T", fstab, mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("mount -T: %v: %s", err, out)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	if !mounted(mnt, "fuse") && !mounted(mnt, "fuse.casfs") {
		b, _ := os.ReadFile("/proc/self/mounts")
		t.Fatalf("not mounted:\n%s", b)
	}
	// mount(8) returned only once the mount answered.
	b, err := os.ReadFile(filepath.Join(mnt, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
	if err != nil || string(b) != "from fstab" {
		t.Fatalf("read through the fstab mount: %q %v", b, err)
	}
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
}

// TestDaemonUsesCallerCredentials: a pull through the socket logs in with
// the caller's DOCKER_CONFIG, not the daemon's environment (which has none),
// and neither the daemon's log nor any output holds the password.
func TestDaemonUsesCallerCredentials(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Auth: true})
	img := gcTestImage(t, "caller")
	pushAuthed(t, reg, "lab/caller", "1", img)
	ref := reg.Ref("lab/caller", "1")

	c := newCLI(t)
	c.Env = append(c.Env, "DOCKER_CONFIG="+t.TempDir())
	mountCASFS(t, c)
	r := c.Fail(1, nil, []string{"image", "pull", "--plain-http", "--no-unpack", "--hosts-dir", t.TempDir(), ref}, "unauthorized")

	creds := dockerConfigFor(t, reg, reg.Host)
	c.Env = append(c.Env, "DOCKER_CONFIG="+creds)
	out := c.OK(nil, "image", "pull", "--plain-http", "--no-unpack", "--hosts-dir", t.TempDir(), ref)
	if !strings.Contains(out, img.Manifest.Digest.String()) {
		t.Fatalf("pull through the daemon with the caller's DOCKER_CONFIG:\n%s", out)
	}
	assertNoSecret(t, c, reg.Password, r.Stderr, out)
}
