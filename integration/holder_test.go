package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/casfs/casfs/internal/faultproxy"
	"github.com/casfs/casfs/internal/testenv"
)

// Without a mount, commands run at the same time on one root: the first
// holds the store and serves its socket, the others go through it.

func TestHolderConcurrentPulls(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	a := pushTestImage(t, reg, "lab/a", "1", gcTestImage(t, "base", "only-a"))
	b := pushTestImage(t, reg, "lab/b", "1", gcTestImage(t, "base", "only-b"))
	c := newCLI(t)

	results := make([]result, 2)
	var wg sync.WaitGroup
	for i, ref := range []string{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runResult(c, "image", "pull", "--plain-http", ref)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.Code != 0 {
			t.Errorf("pull %d: exit %d\nstderr: %s", i, r.Code, r.Stderr)
		}
	}
	got := lines(c.OK(nil, "image", "ls", "-q"))
	slices.Sort(got)
	if want := []string{a, b}; !slices.Equal(got, want) {
		t.Errorf("images after two pulls at once: %v, want %v", got, want)
	}
	if _, err := os.Lstat(filepath.Join(c.Root, "casfs.sock")); !os.IsNotExist(err) {
		t.Errorf("socket left after the last command: %v", err)
	}
}

// runResult is cli.Run for goroutines other than the test's: no t.Fatal.
func runResult(c *cli, args ...string) result {
	out, err := runBounded(c, args...)
	if err != nil {
		return result{Code: -1, Stderr: err.Error()}
	}
	return result{Stdout: out}
}

// A pull held up by a slow registry holds the store; listings and an
// upload go through its socket meanwhile, a mount is refused with the
// truth, and when the pull is done its process finishes the upload in
// flight, saying so, before it lets go.
func TestHolderServesDuringLongPull(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	img := faultImage(t)
	p, ref := faultRegistry(t, img)
	layer := faultproxy.Blob(img.Layers[0].Digest)
	held := make(chan struct{})
	if err := p.Set(layer, faultproxy.Fault{Kind: faultproxy.StallBody, Method: "GET", After: 1000, Times: 1,
		OnHold: sync.OnceFunc(func() { close(held) })}); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t)
	pull := c.command(nil, "image", "pull", "--plain-http", ref)
	pullErr, err := pull.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pull.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pull.Process.Kill(); pull.Wait() })
	<-held

	// The manifest is stored before its layers are asked for.
	if got := c.OK(nil, "content", "ls", "-q"); !strings.Contains(got, img.Manifest.Digest.String()) {
		t.Errorf("content ls during the pull: %q, want the manifest %s", got, img.Manifest.Digest)
	}
	if got := c.OK(nil, "image", "ls", "-q"); got != "" {
		t.Errorf("image ls during the pull: %q, want nothing yet", got)
	}
	mnt := t.TempDir()
	c.Fail(1, nil, []string{"mount", "-d", mnt}, fmt.Sprintf("is held by process %d (casfs", pull.Process.Pid),
		"serves its socket: commands go through it, but a mount or registry server needs the store to itself")

	// An upload through the pull's process, still running when the pull is done.
	pr, pw := io.Pipe()
	ingest := c.command(pr, "content", "ingest", "-q", "upload")
	var ingestOut, ingestErr bytes.Buffer
	ingest.Stdout, ingest.Stderr = &ingestOut, &ingestErr
	if err := ingest.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close(); ingest.Process.Kill(); ingest.Wait() })
	data := bytes.Repeat([]byte("u"), 8<<20)
	go pw.Write(data[:4<<20])
	waitForIngest(t, c.Root, 1<<20)

	p.Clear(layer)
	waiting := "casfs: waiting for 1 request from another casfs command"
	var pullLog []string
	sc := bufio.NewScanner(pullErr)
	for sc.Scan() && !strings.Contains(sc.Text(), waiting) {
		pullLog = append(pullLog, sc.Text())
	}
	if sc.Err() != nil || !strings.Contains(sc.Text(), waiting) {
		t.Fatalf("the pull's process never said it waits for the upload: %v\n%s", sc.Err(), strings.Join(pullLog, "\n"))
	}
	go func() {
		pw.Write(data[4<<20:])
		pw.Close()
	}()
	if err := ingest.Wait(); err != nil {
		t.Fatalf("upload through the holder: %v\n%s", err, ingestErr.String())
	}
	if got := strings.TrimSpace(ingestOut.String()); got != sha(data) {
		t.Errorf("upload stored %q, want %s", got, sha(data))
	}
	io.Copy(io.Discard, pullErr)
	if err := pull.Wait(); err != nil {
		t.Fatalf("pull: %v", err)
	}
	if got := lines(c.OK(nil, "image", "ls", "-q")); !slices.Equal(got, []string{ref}) {
		t.Errorf("images after the pull: %v, want %s", got, ref)
	}
}

// A holder killed with SIGKILL leaves its socket file behind; the next
// command finds nobody listening and the lock free, and opens the store.
func TestHolderKilledLeavesStaleSocket(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	pr, pw := io.Pipe()
	holder := c.command(pr, "content", "ingest", "killed")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close(); holder.Process.Kill(); holder.Wait() })
	go pw.Write(bytes.Repeat([]byte("k"), 4<<20))
	waitForIngest(t, c.Root, 1<<20)
	sock := filepath.Join(c.Root, "casfs.sock")
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("the holder serves no socket: %v", err)
	}
	holder.Process.Signal(syscall.SIGKILL)
	holder.Wait()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("want the killed holder's socket left behind: %v", err)
	}

	d := strings.TrimSpace(c.OK(strings.NewReader("after"), "content", "ingest", "-q", "after"))
	if got := c.OK(nil, "content", "get", d); got != "after" {
		t.Errorf("blob stored after the stale socket: %q", got)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("stale socket still there after the next command: %v", err)
	}
}

// "held by" is said only when it is true, and says what is true: here a
// process that holds the store's lock and serves no socket.
func TestHolderWithoutSocketIsNamed(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "flock")
	c := newCLI(t)
	c.OK(strings.NewReader("x"), "content", "ingest", "x")
	c.OK(nil, "content", "ls") // nobody holds it: no message at all

	pr, pw := io.Pipe()
	locker := exec.Command("flock", filepath.Join(c.Root, "meta"), "cat")
	locker.Stdin = pr
	locked, err := locker.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := locker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pw.Close(); locker.Process.Kill(); locker.Wait() })
	// cat echoes once flock holds the lock.
	pw.Write([]byte("held\n"))
	if line, err := bufio.NewReader(locked).ReadString('\n'); err != nil || line != "held\n" {
		t.Fatalf("flock did not start: %q %v", line, err)
	}
	c.Fail(1, nil, []string{"content", "ls"},
		fmt.Sprintf("store %s is held by process %d (flock %s cat), which serves no socket; wait for it to finish, or stop it", c.Root, locker.Process.Pid, filepath.Join(c.Root, "meta")))
	pw.Close()
	if err := locker.Wait(); err != nil {
		t.Fatal(err)
	}
	c.OK(nil, "content", "ls")
}
