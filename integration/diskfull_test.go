package integration

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/diskspace"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// bulkyImage is one layer of size random (incompressible) bytes.
func bulkyImage(t *testing.T, size int) *testimage.Image {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	img, err := testimage.Build(testimage.ImageSpec{
		Layers: []testimage.Layer{{Files: []testimage.File{
			testimage.Dir("etc", 0o755), testimage.Reg("etc/motd", 0o644, "bulky\n"),
			{Path: "data/bulk", Mode: 0o644, Data: data},
		}, Compression: "none"}},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// wantNoIngests fails when an ingest folder holds data.
func wantNoIngests(t *testing.T, c *cli) {
	t.Helper()
	if got := c.OK(nil, "content", "active", "-q"); strings.TrimSpace(got) != "" {
		t.Fatalf("partial downloads kept after ENOSPC: %q", got)
	}
	matches, _ := filepath.Glob(filepath.Join(c.Root, "ingest", "*", "data"))
	if len(matches) != 0 {
		t.Fatalf("ingest data left: %v", matches)
	}
}

// A full filesystem under a running daemon: commands fail with one line
// naming ENOSPC, a pull leaves no partial download, the mount keeps
// serving, and once space is freed everything works and check is clean.
func TestFullDisk(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	small := busyboxImage(t)
	smallRef := pushTestImage(t, reg, "lab/small", "1", small)
	bulky := bulkyImage(t, 24<<20)
	bulkyRef := pushTestImage(t, reg, "lab/bulky", "1", bulky)

	fs := testenv.SmallFS(t, 192<<20)
	c := &cli{t: t, Root: filepath.Join(fs, "store")}
	c.OK(nil, "image", "pull", "-q", "--plain-http", smallRef)
	mnt := mountCASFS(t, c)

	// Space for the manifest and part of the layer, not all of it: the pull
	// fails while downloading and removes what it had.
	filler := testenv.FillFS(t, fs, "filler", diskspace.Reserve+12<<20)
	c.Fail(1, nil, []string{"image", "pull", "--plain-http", bulkyRef}, "pull", "no space left on device (ENOSPC)", bulky.Layers[0].Digest.Encoded())
	wantNoIngests(t, c)

	// No space at all: writes fail cleanly, reads go on.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	filler = testenv.FillFS(t, fs, "filler", 0)
	c.Fail(1, strings.NewReader("some bytes"), []string{"content", "ingest", "r"}, "ingest", "no space left on device")
	c.Fail(1, nil, []string{"image", "tag", smallRef, reg.Ref("lab/small", "2")}, "no space left on device")
	c.Fail(1, nil, []string{"image", "pull", "--plain-http", bulkyRef}, "pull", "no space left on device")
	wantNoIngests(t, c)
	motd := filepath.Join(mnt, "images", reg.Host, "lab", "small", "1", "rootfs", "etc", "motd")
	if b, err := os.ReadFile(motd); err != nil || string(b) != "hello from casfs\n" {
		t.Fatalf("read through the mount on a full disk: %q %v", b, err)
	}
	if out := c.OK(nil, "image", "ls", "-q"); strings.TrimSpace(out) != smallRef {
		t.Fatalf("image ls on a full disk: %q", out)
	}
	c.OK(nil, "check")

	// Space again: the same daemon pulls, and the store checks clean.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	c.OK(nil, "image", "pull", "-q", "--plain-http", bulkyRef)
	bulk := filepath.Join(mnt, "images", reg.Host, "lab", "bulky", "1", "rootfs", "etc", "motd")
	if b, err := os.ReadFile(bulk); err != nil || string(b) != "bulky\n" {
		t.Fatalf("read of the image pulled after space was freed: %q %v", b, err)
	}
	c.OK(nil, "check")
	unmount(t, mnt)

	// Without a daemon, on a full disk: reads work, writes fail in one line.
	filler = testenv.FillFS(t, fs, "filler", 0)
	if out := c.OK(nil, "image", "ls", "-q"); !strings.Contains(out, bulkyRef) {
		t.Fatalf("image ls on a full disk without a daemon: %q", out)
	}
	c.Fail(1, strings.NewReader("some bytes"), []string{"content", "ingest", "r"}, "no space left on device")
	c.OK(nil, "check")
	c.OK(nil, "check", "--repair")
	os.Remove(filler)
	c.OK(nil, "check")
}

// diskFullTrials is how many pulls TestDiskFullTrials runs into a full
// disk: CASFS_DISKFULL_TRIALS (make soak sets it), else 2.
func diskFullTrials(t *testing.T) int { return trialCount(t, "CASFS_DISKFULL_TRIALS", 2) }

// Each trial fills the disk at a random moment of a pull: the pull either
// completes or fails in one line naming ENOSPC (never a crash), and once
// space is freed the store checks clean and the pull completes.
//
// The filler leaves between 48 and 64 MiB free: full for content (which
// stops at diskspace.Reserve) but not below what badger's own writes need.
// Filling the last bytes at the very moment badger flushes a table is the
// one case casfs cannot guard (badger maps the new table's file without
// allocating it); TestFullDisk fills a disk to its last byte under an idle
// daemon and before commands.
func TestDiskFullTrials(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	trials := diskFullTrials(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := crashImage(t, "full")
	ref := pushTestImage(t, reg, "lab/full", "1", img)

	// How long a pull takes bounds the random moment.
	probe := newCLI(t)
	start := time.Now()
	probe.OK(nil, "image", "pull", "-q", "--plain-http", ref)
	took := time.Since(start)

	failed := 0
	for i := 0; i < trials; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			fs := testenv.SmallFS(t, 160<<20)
			c := &cli{t: t, Root: filepath.Join(fs, "store")}
			cmd := c.command(nil, "image", "pull", "-q", "--plain-http", ref)
			var errb bytes.Buffer
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			delay := time.Duration(mrand.Int64N(int64(took) + 1))
			var filler string
			select {
			case err := <-done:
				done <- err
			case <-time.After(delay):
			}
			leave := diskspace.MetaReserve + 16<<20 + mrand.Int64N(diskspace.Reserve-diskspace.MetaReserve-16<<20)
			filler = testenv.FillFS(t, fs, "filler", leave)
			var err error
			select {
			case err = <-done:
			case <-time.After(cmdTimeout):
				cmd.Process.Kill()
				t.Fatalf("pull on a disk filled after %v did not finish", delay)
			}
			if err != nil {
				var ee *exec.ExitError
				msgs := lines(errb.String())
				if !errors.As(err, &ee) || ee.ExitCode() != 1 || len(msgs) == 0 ||
					!strings.HasPrefix(msgs[len(msgs)-1], "casfs: ") || !strings.Contains(msgs[len(msgs)-1], "no space left on device") {
					t.Fatalf("pull on a disk filled after %v: %v\n%s", delay, err, errb.String())
				}
				failed++
			}
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(c.Root); err != nil {
				t.Logf("disk filled before the store existed: %v", err)
			} else if r := c.Run(nil, "check"); r.Code != 0 {
				t.Errorf("check after the disk was freed: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
			}
			c.OK(nil, "image", "pull", "-q", "--plain-http", ref)
			verifyImage(t, c, ref, img, "top of full\n")
			if r := c.Run(nil, "check", "-q"); r.Code != 0 {
				t.Errorf("check after the pull: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
			}
		})
	}
	fmt.Printf("disk-full trials: %d, pulls failed with ENOSPC: %d\n", trials, failed)
}
