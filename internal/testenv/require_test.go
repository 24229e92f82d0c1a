package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as a helper process in the tests
// below instead of running its tests normally.
const helperEnv = "CASFS_TESTENV_HELPER"

func TestHelperProcess(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "":
		t.Skip("only runs as a helper process")
	case "require-missing":
		Require(t, "sh", "no-such-command-casfs")
		t.Log("after Require")
	case "registry-then-hang":
		r := StartRegistry(t, RegistryOptions{})
		r.mu.Lock()
		pid := r.cmd.Process.Pid
		r.mu.Unlock()
		fmt.Printf("REGISTRY_PID=%d\n", pid)
		select {} // wait to be killed
	}
}

func runHelper(t *testing.T, mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// TestRequireFailsWithOrWithoutCI: a missing prerequisite fails the test
// whatever CI says; it never skips.
func TestRequireFailsWithOrWithoutCI(t *testing.T) {
	for _, tc := range []struct {
		ci       string
		wantFail bool
		want     string
	}{
		{"", true, "prerequisite no-such-command-casfs missing (make prereqs installs it)"},
		{"true", true, "prerequisite no-such-command-casfs missing (make prereqs installs it)"},
	} {
		cmd := runHelper(t, "require-missing", "CI="+tc.ci)
		out, err := cmd.CombinedOutput()
		if (err != nil) != tc.wantFail {
			t.Errorf("CI=%q: err = %v, want failure %t\n%s", tc.ci, err, tc.wantFail, out)
		}
		if !bytes.Contains(out, []byte(tc.want)) || !bytes.Contains(out, []byte("no-such-command-casfs")) {
			t.Errorf("CI=%q: output lacks %q:\n%s", tc.ci, tc.want, out)
		}
		if bytes.Contains(out, []byte("SKIP")) {
			t.Errorf("CI=%q: test skipped:\n%s", tc.ci, out)
		}
		if bytes.Contains(out, []byte("after Require")) {
			t.Errorf("CI=%q: test went on after Require:\n%s", tc.ci, out)
		}
	}
}

// TestKilledTestLeavesNoRegistry kills a test binary that runs a registry
// and checks that the kernel took the registry down with it.
func TestKilledTestLeavesNoRegistry(t *testing.T) {
	Require(t, registryBinary)
	cmd := runHelper(t, "registry-then-hang")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := 0
	var seen strings.Builder
	sc := bufio.NewScanner(stdout)
	for pid == 0 && sc.Scan() {
		seen.WriteString(sc.Text() + "\n")
		if v, ok := strings.CutPrefix(sc.Text(), "REGISTRY_PID="); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid == 0 {
		t.Fatalf("helper printed no registry pid:\n%s%s", seen.String(), stderr.String())
	}
	// Open a pidfd before the kill: it becomes readable when the registry
	// exits, which is the event this test waits for.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(pidfd)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 10_000)
	if err != nil || n != 1 {
		unix.Kill(pid, syscall.SIGKILL)
		t.Fatalf("registry pid %d survived its killed test (poll = %d, %v)", pid, n, err)
	}
}
