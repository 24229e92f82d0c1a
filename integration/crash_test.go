package integration

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// crashTrials is how many operations TestCrashTrials kills: CASFS_CRASH_TRIALS
// (make soak sets 200), else 12, three of each operation: the longest test
// of make test, which must fit CI's budget; the soak is where trials count.
func crashTrials(t *testing.T) int { return trialCount(t, "CASFS_CRASH_TRIALS", 12) }

// trialCount reads a number of trials from the environment variable env,
// def when it is unset.
func trialCount(t *testing.T, env string, def int) int {
	s := os.Getenv(env)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", env, s)
	}
	return n
}

// crashImage is a small two-layer image whose top layer is big enough
// (random, incompressible bytes) that a kill often lands mid-download or
// mid-unpack.
func crashImage(t *testing.T, name string) *testimage.Image {
	t.Helper()
	big := make([]byte, 3<<20)
	rand.Read(big)
	img, err := testimage.Build(testimage.ImageSpec{
		Layers: []testimage.Layer{
			{Files: []testimage.File{testimage.Dir("etc", 0o755), testimage.Reg("etc/motd", 0o644, "base of "+name+"\n"), testimage.Reg("etc/gone", 0o644, "x\n")}},
			{Files: []testimage.File{testimage.Dir("etc", 0o755), testimage.Reg("etc/motd", 0o644, "top of "+name+"\n"), testimage.Whiteout("etc", "gone"),
				{Path: "data/big", Mode: 0o644, Data: big}}, Compression: "none"},
		},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// killed runs casfs with args and SIGKILLs it after delay unless it is done
// by then. It reports whether the kill happened.
func killed(t *testing.T, c *cli, stdinPath string, delay time.Duration, args ...string) bool {
	t.Helper()
	var stdin io.Reader
	if stdinPath != "" {
		f, err := os.Open(stdinPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		stdin = f
	}
	cmd := c.command(stdin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-done:
		return false
	case <-timer.C:
		cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(cmdTimeout):
			t.Fatalf("casfs %v did not die after SIGKILL", args)
		}
		return true
	}
}

// hasCommand tells whether the binary has a (sub)command: others add
// commands while this test is written.
func hasCommand(c *cli, args ...string) bool {
	r := c.Run(nil, append(args, "--help")...)
	return r.Code == 0 && strings.Contains(r.Stdout, strings.Join(args, " "))
}

// crashOp is one operation the trials kill, and how to check its result.
type crashOp struct {
	name string
	// setup prepares a fresh store (before the killed run).
	setup func(t *testing.T, c *cli)
	// args is the command killed and then run again to completion.
	args  []string
	stdin string
	// verify checks the completed operation's result.
	verify func(t *testing.T, c *cli)
}

func TestCrashTrials(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	trials := crashTrials(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	imgA, imgB := crashImage(t, "a"), crashImage(t, "b")
	refA := pushTestImage(t, reg, "lab/crash-a", "1", imgA)
	refB := pushTestImage(t, reg, "lab/crash-b", "1", imgB)

	// Ingest input: random bytes, so nothing dedups them.
	work := t.TempDir()
	ingestData := make([]byte, 24<<20)
	rand.Read(ingestData)
	ingestPath := filepath.Join(work, "ingest.bin")
	os.WriteFile(ingestPath, ingestData, 0o644)
	ingestD := digest.FromBytes(ingestData)

	layout := filepath.Join(work, "layout")
	imgC := crashImage(t, "c")
	if err := testimage.WriteLayout(layout, "example.com/lab/crash-c:1", imgC.Manifest, imgC.Blobs); err != nil {
		t.Fatal(err)
	}

	probe := newPlainCLI(t)
	ops := []crashOp{
		{name: "pull", args: []string{"image", "pull", "--plain-http", refA},
			verify: func(t *testing.T, c *cli) { verifyImage(t, c, refA, imgA, "top of a\n") }},
		{name: "ingest", args: []string{"content", "ingest", "--expected-digest", ingestD.String(), "--expected-size", strconv.Itoa(len(ingestData)), "crash-ingest"},
			stdin: ingestPath,
			verify: func(t *testing.T, c *cli) {
				if b := c.OK(nil, "content", "get", ingestD.String()); b != string(ingestData) {
					t.Errorf("ingested blob reads back %d bytes, not what was sent", len(b))
				}
			}},
	}
	if hasCommand(probe, "image", "import") {
		ops = append(ops, crashOp{name: "import", args: []string{"image", "import", layout},
			verify: func(t *testing.T, c *cli) { verifyImage(t, c, "example.com/lab/crash-c:1", imgC, "top of c\n") }})
	} else {
		t.Log("no casfs image import yet: not crash-tested")
	}
	var gcArgs []string
	switch {
	case hasCommand(probe, "gc"):
		gcArgs = []string{"gc"}
	case hasCommand(probe, "content", "prune"):
		gcArgs = []string{"content", "prune"}
	}
	if gcArgs != nil {
		ops = append(ops, crashOp{name: strings.Join(gcArgs, " "), args: gcArgs,
			setup: func(t *testing.T, c *cli) {
				c.OK(nil, "image", "pull", "-q", "--plain-http", refA)
				c.OK(nil, "image", "pull", "-q", "--plain-http", refB)
				c.OK(nil, "image", "rm", refB)
			},
			verify: func(t *testing.T, c *cli) {
				verifyImage(t, c, refA, imgA, "top of a\n")
				have := lines(c.OK(nil, "content", "ls", "-q"))
				for _, l := range imgB.Layers {
					if slices.Contains(have, l.Digest.String()) {
						t.Errorf("%s kept layer %s of the removed image", strings.Join(gcArgs, " "), l.Digest)
					}
				}
			}})
	} else {
		t.Log("no casfs gc or content prune yet: not crash-tested")
	}

	// How long each operation takes uninterrupted bounds the random kill moment.
	durations, startups := map[string]time.Duration{}, map[string]time.Duration{}
	for _, op := range ops {
		c := newPlainCLI(t)
		if op.setup != nil {
			op.setup(t, c)
		}
		start := time.Now()
		if killed(t, c, op.stdin, cmdTimeout, op.args...) {
			t.Fatalf("%s did not finish", op.name)
		}
		durations[op.name] = time.Since(start)
		// Killing a process that has not opened the store yet tests
		// nothing: time a command that only opens it, and kill later.
		start = time.Now()
		c.OK(nil, "content", "ls", "-q")
		startups[op.name] = min(time.Since(start)*3/4, durations[op.name]/2)
	}

	// Trials share nothing (each has its own store) and mostly wait on
	// processes and the disk, so they run side by side (go test -parallel).
	var problems, kills atomic.Int32
	t.Run("trials", func(t *testing.T) {
		for i := 0; i < trials; i++ {
			op := ops[i%len(ops)]
			t.Run(fmt.Sprintf("%d-%s", i, op.name), func(t *testing.T) {
				t.Parallel()
				// A dirty check, a failed repeat or a wrong result.
				defer func() {
					if t.Failed() {
						problems.Add(1)
					}
				}()
				crashTrial(t, op, durations[op.name], startups[op.name], &kills)
			})
		}
	})
	fmt.Printf("crash trials: %d, problems: %d\n", trials, problems.Load())
	t.Logf("crash trials: %d (%d killed mid-way), problems: %d", trials, kills.Load(), problems.Load())
}

// crashTrial runs op once on a fresh store, kills it at a random moment
// between startup and duration, and wants a clean check, a repeat that
// completes, and a whole result.
func crashTrial(t *testing.T, op crashOp, duration, startup time.Duration, kills *atomic.Int32) {
	c := newPlainCLI(t)
	if op.setup != nil {
		op.setup(t, c)
	}
	delay := startup + time.Duration(mrand.Int64N(int64(duration-startup)+1))
	wasKilled := killed(t, c, op.stdin, delay, op.args...)
	if wasKilled {
		kills.Add(1)
	}
	// After the crash the store must check clean: leftovers are
	// either fine by design (resumable ingests) or cleaned when
	// the store is opened. (Killed before it made the store, there
	// is nothing to check.)
	if _, err := os.Stat(c.Root); err != nil {
		t.Logf("killed before the store existed: %v", err)
	} else if r := c.Run(nil, "check"); r.Code == 0 {
		if strings.Contains(r.Stdout, "note:") || strings.Contains(r.Stdout, "repaired:") {
			t.Logf("check after killing %s at %v:\n%s", op.name, delay, r.Stdout)
		}
	} else {
		t.Errorf("check after killing %s at %v: exit %d\n%s%s", op.name, delay, r.Code, r.Stdout, r.Stderr)
		if r := c.Run(nil, "check", "--repair"); r.Code != 0 {
			t.Errorf("check --repair could not fix it: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
		}
	}
	// Done again, the operation completes and its result is whole.
	if wasKilled {
		c.OK(openOrNil(t, op.stdin), op.args...)
	}
	op.verify(t, c)
	// check re-hashes every blob, so it is also content verify.
	if r := c.Run(nil, "check", "-q"); r.Code != 0 {
		t.Errorf("check after %s completed: exit %d\n%s%s", op.name, r.Code, r.Stdout, r.Stderr)
	}
}

func openOrNil(t *testing.T, path string) io.Reader {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// verifyImage checks that ref is recorded with img's manifest, that its
// blobs are all there and right, and that its root filesystem (mounted with
// image mount) shows motd and lacks the whited-out file.
func verifyImage(t *testing.T, c *cli, ref string, img *testimage.Image, motd string) {
	t.Helper()
	// image mount fails for an image that is not recorded; the check that
	// follows every verify re-hashes every blob and reports any an image
	// needs but lacks.
	if b, err := os.ReadFile(filepath.Join(c.Root, "blobs", "sha256", img.Manifest.Digest.Encoded())); err != nil || !bytes.Equal(b, img.ManifestBytes()) {
		t.Errorf("%s: manifest blob %s: %v", ref, img.Manifest.Digest, err)
	}
	target := filepath.Join(t.TempDir(), "rootfs")
	os.MkdirAll(target, 0o755)
	c.OK(nil, "image", "mount", ref, target)
	defer func() {
		if r := c.Run(nil, "image", "unmount", target); r.Code != 0 {
			exec.Command("umount", "-l", target).Run()
			t.Errorf("image unmount: %s", r.Stderr)
		}
	}()
	if b, err := os.ReadFile(filepath.Join(target, "etc", "motd")); err != nil || string(b) != motd {
		t.Errorf("%s rootfs etc/motd = %q, %v; want %q", ref, b, err, motd)
	}
	if _, err := os.Lstat(filepath.Join(target, "etc", "gone")); !os.IsNotExist(err) {
		t.Errorf("%s rootfs shows a whited-out file: %v", ref, err)
	}
	if fi, err := os.Stat(filepath.Join(target, "data", "big")); err != nil || fi.Size() != 3<<20 {
		t.Errorf("%s rootfs data/big: %v %v", ref, fi, err)
	}
}
