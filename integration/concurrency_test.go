package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// stressTime is how long the concurrent load runs.
const stressTime = 15 * time.Second

// stressCmdTimeout bounds every command of the stress test: one that does
// not finish is reported as a deadlock.
const stressCmdTimeout = 90 * time.Second

// runBounded runs casfs from any goroutine (no t.Fatal) and returns an error
// for a non-zero exit or a command that does not finish in time.
func runBounded(c *cli, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), stressCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, casfsBin, append([]string{"--root", c.Root}, args...)...)
	cmd.Env = append(os.Environ(), c.Env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("casfs %s did not finish within %v (deadlock?); stderr: %s", strings.Join(args, " "), stressCmdTimeout, errb.String())
	case err != nil:
		return "", fmt.Errorf("casfs %s: %v; stderr: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// stressImages are n images that share their base layer and, pairwise,
// their middle layer, each with its own small top layer.
func stressImages(t *testing.T, n int) []*testimage.Image {
	t.Helper()
	base := []testimage.File{testimage.Dir("etc", 0o755), testimage.Reg("etc/os-release", 0o644, "ID=stress\n")}
	var out []*testimage.Image
	for i := 0; i < n; i++ {
		mid := make([]byte, 512<<10)
		copy(mid, fmt.Sprintf("middle %d", i/2))
		top := make([]byte, 256<<10)
		rand.Read(top)
		img, err := testimage.Build(testimage.ImageSpec{
			Layers: []testimage.Layer{
				{Files: base},
				{Files: []testimage.File{testimage.Dir("mid", 0o755), {Path: "mid/data", Mode: 0o644, Data: mid}}},
				{Files: []testimage.File{testimage.Dir("etc", 0o755), testimage.Reg("etc/motd", 0o644, fmt.Sprintf("image %d\n", i)), {Path: "top", Mode: 0o644, Data: top}}, Compression: "zstd"},
			},
			Config: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, img)
	}
	return out
}

func sha256File(p string) (digest.Digest, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil))), n, nil
}

// TestConcurrentPullsReadsAndPrune runs, for a bounded time against one
// mounted store, 8 pullers of overlapping images (each pulling, reading its
// rootfs through the mount and removing its image again), readers of a
// stable image's rootfs and blobs, and a prune (or verify) loop. No command
// may fail or hang, and afterwards every image's blobs must verify.
func TestConcurrentPullsReadsAndPrune(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	imgs := stressImages(t, 9)
	var refs []string
	for i, img := range imgs {
		refs = append(refs, pushTestImage(t, reg, fmt.Sprintf("lab/stress%d", i), "1", img))
	}
	stable, stableRef := imgs[8], refs[8]
	refs, imgs = refs[:8], imgs[:8]

	c := newRaceCLI(t)
	c.OK(nil, "image", "pull", "-q", "--plain-http", stableRef)
	mnt := mountCASFS(t, c)

	gcArgs := []string{"content", "verify"}
	switch {
	case hasCommand(c, "gc"):
		gcArgs = []string{"gc"}
	case hasCommand(c, "content", "prune"):
		gcArgs = []string{"content", "prune"}
	}
	t.Logf("collector loop runs: casfs %s", strings.Join(gcArgs, " "))

	var (
		mu   sync.Mutex
		errs []error
		ops  = map[string]int{}
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	count := func(what string) {
		mu.Lock()
		ops[what]++
		mu.Unlock()
	}
	deadline := time.Now().Add(stressTime)
	var wg sync.WaitGroup
	imageDir := func(i int) string {
		return filepath.Join(mnt, "images", reg.Host, "lab", fmt.Sprintf("stress%d", i), "1")
	}

	for i := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				if _, err := runBounded(c, "image", "pull", "-q", "--plain-http", refs[i]); err != nil {
					fail(err)
					return
				}
				count("pull")
				want := fmt.Sprintf("image %d\n", i)
				if b, err := os.ReadFile(filepath.Join(imageDir(i), "rootfs", "etc", "motd")); err != nil || string(b) != want {
					fail(fmt.Errorf("image %d: rootfs etc/motd through the mount right after pull = %q, %v", i, b, err))
					return
				}
				if n%2 == 1 { // leave garbage for the collector half of the time
					if _, err := runBounded(c, "image", "rm", refs[i]); err != nil {
						fail(err)
						return
					}
				}
			}
		}()
	}

	stableDir := filepath.Join(mnt, "images", reg.Host, "lab", "stress8", "1")
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				for _, l := range stable.Layers {
					d, n, err := sha256File(filepath.Join(mnt, "blobs", "sha256", l.Digest.Encoded()))
					if err != nil || d != l.Digest || n != l.Size {
						fail(fmt.Errorf("reading blob %s through the mount: got %s (%d bytes), %v", l.Digest, d, n, err))
						return
					}
				}
				if b, err := os.ReadFile(filepath.Join(stableDir, "rootfs", "etc", "motd")); err != nil || string(b) != "image 8\n" {
					fail(fmt.Errorf("stable rootfs etc/motd = %q, %v", b, err))
					return
				}
				if b, err := os.ReadFile(filepath.Join(stableDir, "rootfs", "mid", "data")); err != nil || !bytes.HasPrefix(b, []byte("middle 4")) || len(b) != 512<<10 {
					fail(fmt.Errorf("stable rootfs mid/data: %d bytes, %v", len(b), err))
					return
				}
				count("read")
			}
		}()
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(deadline) {
			if _, err := runBounded(c, gcArgs...); err != nil {
				fail(err)
				return
			}
			count("collect")
		}
	}()
	wg.Wait()
	t.Logf("done in %v: %v", stressTime, ops)
	if err := errors.Join(errs...); err != nil {
		if strings.Contains(err.Error(), "deadlock?") {
			dumpDaemonStacks(t, c, mnt)
		}
		t.Fatal(err)
	}
	if ops["pull"] < len(refs) || ops["read"] == 0 || ops["collect"] == 0 {
		t.Fatalf("load did not run: %v", ops)
	}

	// No lost blob: every image still listed has all its blobs, and they verify.
	all := append(imgs, stable)
	allRefs := append(refs, stableRef)
	listed := lines(c.OK(nil, "image", "ls", "-q"))
	for i, ref := range allRefs {
		if !contains(listed, ref) {
			continue
		}
		args := []string{"content", "verify", all[i].Manifest.Digest.String(), all[i].Config.Digest.String()}
		for _, l := range all[i].Layers {
			args = append(args, l.Digest.String())
		}
		c.OK(nil, args...)
	}
	if !contains(listed, stableRef) {
		t.Fatalf("the stable image is gone: %v", listed)
	}
	c.OK(nil, "content", "verify")
	if r := c.Run(nil, "check", "-q"); r.Code != 0 {
		t.Fatalf("check after the load: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// dumpDaemonStacks makes the mount daemon print its goroutines (SIGQUIT)
// into its log and shows the part of them that names casfs code.
func dumpDaemonStacks(t *testing.T, c *cli, mnt string) {
	pids, _ := exec.Command("pgrep", "-f", "notify-fd 3.*"+mnt).Output()
	for _, f := range strings.Fields(string(pids)) {
		exec.Command("kill", "-QUIT", f).Run()
	}
	logPath := filepath.Join(c.Root, "casfs.log")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logPath)
		if i := bytes.Index(b, []byte("goroutine ")); i >= 0 && bytes.Contains(b[i:], []byte("\n\n")) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(logPath)
	if i := bytes.Index(b, []byte("SIGQUIT")); i >= 0 {
		b = b[i:]
	}
	if len(b) > 60<<10 {
		b = b[:60<<10]
	}
	t.Logf("daemon goroutines:\n%s", b)
}
