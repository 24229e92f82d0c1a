package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/internal/testenv"
)

// A corrupt layer is found, and --repair fetches it again from the registry
// it came from; a record whose file is gone and that no image needs is dropped.
func TestCheckRepairsCorruptBlobFromRegistry(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := crashImage(t, "check")
	ref := pushTestImage(t, reg, "lab/check", "1", img)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--plain-http", ref)
	out := c.OK(nil, "check")
	if !strings.Contains(out, "0 problems") {
		t.Fatalf("check of a fresh pull:\n%s", out)
	}

	layer := img.Layers[0].Digest
	p := filepath.Join(c.Root, "blobs", "sha256", layer.Encoded())
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, []byte("bit rot"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := c.Fail(1, nil, []string{"check"}, "1 problem(s) found")
	if !strings.Contains(r.Stdout, "problem: blob "+layer.String()+": content does not match its digest") {
		t.Fatalf("check did not name the corrupt layer:\n%s", r.Stdout)
	}

	out = c.OK(nil, "check", "--repair")
	if !strings.Contains(out, "repaired: blob "+layer.String()+": replaced the corrupt file with a fresh copy from its registry") {
		t.Fatalf("check --repair:\n%s", out)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != string(img.Blobs[layer]) {
		t.Fatalf("layer after repair: %d bytes, %v", len(b), err)
	}
	c.OK(nil, "content", "verify")

	var rep struct {
		Problems []struct{ Kind, Name, Detail string }
		Checked  struct{ Blobs, Files, Images int }
	}
	if err := json.Unmarshal([]byte(c.OK(nil, "check", "--format", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || rep.Checked.Blobs != 4 || rep.Checked.Files != 4 || rep.Checked.Images != 1 {
		t.Fatalf("check --format json after repair: %+v", rep)
	}
}

// A mount whose daemon was killed answers ENOTCONN: check reports it and
// --repair detaches it. Through a live daemon, check runs over the socket.
func TestCheckStaleMount(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	c := newCLI(t)
	c.OK(strings.NewReader("some content"), "content", "ingest", "-q", "r1")
	mnt := mountCASFS(t, c)
	out := c.OK(nil, "check")
	if !strings.Contains(out, "1 mounts: 0 problems") {
		t.Fatalf("check through the live daemon:\n%s", out)
	}

	pids, err := exec.Command("pgrep", "-f", "notify-fd 3.*"+mnt).Output()
	if err != nil {
		t.Fatalf("find the daemon of %s: %v", mnt, err)
	}
	for _, f := range strings.Fields(string(pids)) {
		pid, _ := strconv.Atoi(f)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// The kernel answers ENOTCONN once the daemon's /dev/fuse is closed
	// (statfs always reaches the server; stat may come from the cache).
	deadline := time.Now().Add(cmdTimeout)
	var st unix.Statfs_t
	for unix.Statfs(mnt, &st) != unix.ENOTCONN {
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer ENOTCONN after the daemon was killed", mnt)
		}
		time.Sleep(20 * time.Millisecond)
	}

	r := c.Fail(1, nil, []string{"check"}, "problem(s) found")
	if !strings.Contains(r.Stdout, "problem: mount "+mnt+": stale") {
		t.Fatalf("check did not report the stale mount:\n%s", r.Stdout)
	}
	out = c.OK(nil, "check", "--repair")
	if !strings.Contains(out, "repaired: mount "+mnt+": detached") {
		t.Fatalf("check --repair:\n%s", out)
	}
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatalf("mountpoint after repair: %v", err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), " "+mnt+" ") {
		t.Fatalf("%s is still mounted after repair", mnt)
	}
	c.OK(nil, "check")
}

// A needed layer removed with content rm --force (file and record) is
// named by check with the way back, and check --repair fetches it again
// from the registry its manifest came from.
func TestCheckRepairRefetchesForcedRemoval(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := gcTestImage(t, "forced")
	ref := pushTestImage(t, reg, "lab/forced", "1", img)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--no-unpack", "--plain-http", ref)
	layer := img.Layers[0].Digest
	c.OK(nil, "content", "rm", "--force", layer.String())

	r := c.Fail(1, nil, []string{"check"}, "1 problem(s) found")
	if want := "needs blob " + layer.String() + ", which is neither stored nor recorded (--repair fetches it from its registry)"; !strings.Contains(r.Stdout, want) {
		t.Fatalf("check does not say %q:\n%s", want, r.Stdout)
	}
	out := c.OK(nil, "check", "--repair")
	if want := "repaired: blob " + layer.String() + ": fetched again from its registry (image " + ref + " needs it)"; !strings.Contains(out, want) {
		t.Fatalf("check --repair does not say %q:\n%s", want, out)
	}
	if got := c.OK(nil, "content", "get", layer.String()); got != string(img.Blobs[layer]) {
		t.Fatalf("layer after repair: %d bytes, want %d", len(got), len(img.Blobs[layer]))
	}
	if out := c.OK(nil, "check"); !strings.Contains(out, "0 problems") {
		t.Fatalf("check after repair:\n%s", out)
	}
}
