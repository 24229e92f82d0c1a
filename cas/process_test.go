package cas

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/casfs/casfs/errdefs"
	"github.com/opencontainers/go-digest"
)

// Child processes are this test binary re-executed with helperEnv set to
// the role to play; they talk to the parent over stdin and stdout.
const (
	helperEnv  = "CASFS_CAS_TEST_HELPER"
	rootEnv    = "CASFS_CAS_TEST_ROOT"
	crashSize  = 64 << 20
	crashSeed  = 42
	helperRef  = "helper/ref"
	crashRef   = "crash/ref"
	lockedLine = "locked"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "hold-lock":
		os.Exit(helperHoldLock())
	case "ingest":
		os.Exit(helperIngest())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper role")
		os.Exit(2)
	}
}

// helperHoldLock takes the lock of helperRef, says so, and keeps it until
// its stdin closes.
func helperHoldLock() int {
	s, err := Open(os.Getenv(rootEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	w, err := s.Writer(context.Background(), helperRef, WriterOpts{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	w.Write([]byte("from the child"))
	fmt.Println(lockedLine)
	io.Copy(io.Discard, os.Stdin)
	if err := w.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// helperIngest copies the crash stream into crashRef, printing how many
// bytes it has read after every read, until it is killed.
func helperIngest() int {
	s, err := Open(os.Getenv(rootEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	data := pseudoRandom(crashSeed, crashSize)
	d := digest.FromBytes(data)
	w, err := s.Writer(context.Background(), crashRef, WriterOpts{Expected: d, Total: crashSize})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	r := &progressReader{r: onlyReader{bytes.NewReader(data)}, report: func(n int64) {
		fmt.Fprintln(out, n)
		out.Flush()
	}}
	if err := Copy(context.Background(), w, r, crashSize, d); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintln(out, "done")
	out.Flush()
	return 0
}

type progressReader struct {
	r      io.Reader
	n      int64
	report func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	// Small reads, so the parent can stop the child at many points.
	n, err := p.r.Read(b[:min(len(b), 256<<10)])
	p.n += int64(n)
	p.report(p.n)
	return n, err
}

func helperCommand(t *testing.T, role, root string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+role, rootEnv+"="+root)
	cmd.Stderr = os.Stderr
	return cmd
}

func TestLockHeldByAnotherProcess(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for _, release := range []string{"close", "kill"} {
		t.Run(release, func(t *testing.T) {
			cmd := helperCommand(t, "hold-lock", s.Root())
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if strings.TrimSpace(line) != lockedLine {
				t.Fatalf("child said %q, %v", line, err)
			}
			_, err = s.Writer(ctx, helperRef, WriterOpts{})
			wantErr(t, err, errdefs.ErrLocked, helperRef)
			wantErr(t, s.Abort(ctx, helperRef), errdefs.ErrLocked)

			if release == "close" {
				stdin.Close()
				if err := cmd.Wait(); err != nil {
					t.Fatalf("child: %v", err)
				}
			} else {
				// The kernel drops a dead holder's lock.
				cmd.Process.Signal(syscall.SIGKILL)
				cmd.Wait()
			}
			w, err := s.Writer(ctx, helperRef, WriterOpts{})
			if err != nil {
				t.Fatalf("writer after the child let go: %v", err)
			}
			defer w.Close()
			// A clean close leaves what the child wrote; a killed child
			// loses what it still had buffered.
			st, _ := w.Status()
			if release == "close" && st.Offset != int64(len("from the child")) {
				t.Fatalf("resumed the child's ingest at %d", st.Offset)
			}
			if err := w.Truncate(0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCrashDuringIngest kills a child in the middle of a Copy and checks
// that blobs/ holds only complete blobs and that the ingest resumes.
func TestCrashDuringIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: re-executes the test binary several times")
	}
	ctx := context.Background()
	data := pseudoRandom(crashSeed, crashSize)
	d := digest.FromBytes(data)
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 7))
	for i := 0; i < 5; i++ {
		// Iteration 0 always gets far; the others die anywhere up to 90%.
		target := int64(rng.IntN(crashSize * 9 / 10))
		if i == 0 {
			target = crashSize / 2
		}
		t.Run(fmt.Sprint("kill at ", target), func(t *testing.T) {
			s := newStore(t)
			got := runAndKill(t, s.Root(), target)
			t.Logf("child reported %d bytes when killed", got)
			for _, name := range blobFiles(t, s) {
				bd := digest.NewDigestFromEncoded(digest.SHA256, name)
				if bd != d {
					t.Fatalf("unexpected file in blobs: %s", name)
				}
				if err := s.Verify(ctx, bd); err != nil {
					t.Fatalf("blob after crash: %v", err)
				}
			}
			st, err := s.Status(ctx, crashRef)
			if err != nil && got < crashSize {
				t.Fatalf("ingest after crash: %v", err)
			}
			// The child's ring holds at most ringSize chunks not yet on disk.
			if floor := got - int64(ringSize+1)*chunkSize; floor > 0 && st.Offset < floor {
				t.Fatalf("only %d bytes survived after %d were read", st.Offset, got)
			}
			w := mustWriter(t, s, crashRef, WriterOpts{Expected: d, Total: crashSize})
			defer w.Close()
			ws, _ := w.Status()
			if ws.Offset != st.Offset {
				t.Fatalf("writer resumed at %d, the ingest holds %d", ws.Offset, st.Offset)
			}
			if err := Copy(ctx, w, onlyReader{bytes.NewReader(data)}, crashSize, d); err != nil {
				t.Fatal(err)
			}
			if err := s.Verify(ctx, d); err != nil {
				t.Fatal(err)
			}
			if dirs := ingestDirs(t, s); len(dirs) != 0 {
				t.Fatalf("ingest folders left: %v", dirs)
			}
		})
	}
}

// runAndKill starts the ingest child and SIGKILLs it once it reports at
// least target bytes read; it returns the last count reported.
func runAndKill(t *testing.T, root string, target int64) int64 {
	t.Helper()
	cmd := helperCommand(t, "ingest", root)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last int64
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "done" {
			last = crashSize
			break
		}
		n, err := strconv.ParseInt(sc.Text(), 10, 64)
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child said %q", sc.Text())
		}
		last = n
		if n >= target {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	err = cmd.Wait()
	var exit *exec.ExitError
	if last < crashSize && !(errors.As(err, &exit) && exit.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL) {
		t.Fatalf("child ended before the kill: %v", err)
	}
	return last
}
