// Package integration runs the built casfs binary against real stores,
// registries, mounts and runc.
package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/testenv"
)

// casfsBin is the binary under test built once by TestMain with the race
// detector; plainBin is the same program without it. A race-enabled
// process costs about four times the CPU to start and run, and most
// commands a test runs check outcomes, not interleavings: those run
// plainBin. The long-lived processes, where concurrent requests meet (the
// mount and serve daemons), and every command of the tests made with
// newRaceCLI (concurrent pulls, the unpack pipeline's cancellation, lazy
// reads) run casfsBin.
var casfsBin, plainBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "casfs-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	casfsBin, plainBin = filepath.Join(dir, "casfs"), filepath.Join(dir, "casfs-plain")
	race := testenv.CasfsBuild("..", casfsBin, true)
	plain := testenv.CasfsBuild("..", plainBin, false)
	for _, b := range []*exec.Cmd{race, plain} {
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		if err := b.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "build casfs:", err)
			os.Exit(1)
		}
	}
	for _, b := range []*exec.Cmd{race, plain} {
		if err := b.Wait(); err != nil {
			fmt.Fprintln(os.Stderr, "build casfs:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one finished run of the binary.
type result struct {
	Stdout, Stderr string
	Code           int
}

// cli runs casfs commands against one store root.
type cli struct {
	t    testing.TB
	Root string
	Env  []string
	// Bin is the binary run; empty chooses by command (binFor).
	Bin string
}

func newCLI(t testing.TB) *cli {
	return &cli{t: t, Root: filepath.Join(t.TempDir(), "store")}
}

// newPlainCLI is newCLI running the binary built without the race
// detector for every command, daemons included.
func newPlainCLI(t testing.TB) *cli {
	c := newCLI(t)
	c.Bin = plainBin
	return c
}

// newRaceCLI is newCLI running the race-enabled binary for every command.
func newRaceCLI(t testing.TB) *cli {
	c := newCLI(t)
	c.Bin = casfsBin
	return c
}

// binFor is the binary that runs args when a test chose none: the
// race-enabled one for the daemons (mount, serve, image mount), the plain
// one for commands that run and exit.
func binFor(args []string) string {
	var words []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			words = append(words, a)
		}
	}
	switch {
	case len(words) > 0 && (words[0] == "mount" || words[0] == "serve"):
		return casfsBin
	case len(words) > 1 && words[0] == "image" && words[1] == "mount":
		return casfsBin
	}
	return plainBin
}

// cmdTimeout bounds every command: a hang is a failure, not a stuck suite.
const cmdTimeout = 2 * time.Minute

func (c *cli) command(stdin io.Reader, args ...string) *exec.Cmd {
	bin := c.Bin
	if bin == "" {
		bin = binFor(args)
	}
	cmd := exec.Command(bin, append([]string{"--root", c.Root}, args...)...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Stdin = stdin
	return cmd
}

// Run runs casfs with args and stdin (nil for none) and returns what it printed.
func (c *cli) Run(stdin io.Reader, args ...string) result {
	c.t.Helper()
	cmd := c.command(stdin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start casfs %v: %v", args, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(cmdTimeout):
		cmd.Process.Kill()
		<-done
		c.t.Fatalf("casfs %v did not finish within %v; stderr: %s", args, cmdTimeout, errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("casfs %v: %v", args, err)
	}
	return result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// OK runs casfs and fails the test unless it exits 0.
func (c *cli) OK(stdin io.Reader, args ...string) string {
	c.t.Helper()
	r := c.Run(stdin, args...)
	if r.Code != 0 {
		c.t.Fatalf("casfs %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// Fail runs casfs, expects exit code want and one stderr line containing each of msgs.
func (c *cli) Fail(want int, stdin io.Reader, args []string, msgs ...string) result {
	c.t.Helper()
	r := c.Run(stdin, args...)
	if r.Code != want {
		c.t.Fatalf("casfs %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, want, r.Stdout, r.Stderr)
	}
	lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "casfs: ") {
		c.t.Errorf("casfs %s: last stderr line %q does not start with 'casfs: '", strings.Join(args, " "), last)
	}
	for _, m := range msgs {
		if !strings.Contains(last, m) {
			c.t.Errorf("casfs %s: error %q does not mention %q", strings.Join(args, " "), last, m)
		}
	}
	return r
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// treeOf lists every path under dir with its mode, for "store unchanged" checks.
func treeOf(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		desc := fi.Mode().String()
		if fi.Mode().IsRegular() {
			desc += fmt.Sprintf(" %d", fi.Size())
		}
		out[rel] = desc
		return nil
	})
	return out
}

// waitFor polls cond until it holds, failing the test after bound.
func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
