package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// measured is one timed child process: its wall time and the peak resident
// set the kernel recorded for it (wait4's ru_maxrss, as /usr/bin/time -v).
type measured struct {
	wall   time.Duration
	cpu    time.Duration // user+sys of the process and the children it waited for
	maxRSS int64         // bytes
	// writerCPU is the CPU time the busy writer (busyWriter) took from
	// the machine's cores while the run was timed; zero on a quiet run.
	// best keeps the best run's.
	writerCPU time.Duration
}

const gnuTime = "/usr/bin/time"

// runTimed runs a command to completion, bounded by timeout, and measures it.
// Output is kept only to explain a failure.
func runTimed(timeout time.Duration, name string, args ...string) (measured, error) {
	return run(timeout, true, name, args...)
}

// runWall is runTimed without the peak RSS: the command is started
// directly, not under GNU time, whose own start (6-9 ms here) would count
// in figures of a few hundred milliseconds.
func runWall(timeout time.Duration, name string, args ...string) (measured, error) {
	return run(timeout, false, name, args...)
}

func run(timeout time.Duration, rss bool, name string, args ...string) (measured, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// A child's ru_maxrss starts at its parent's peak (exec records the
	// old, here shared, mm's high-water mark), so the bench's own RSS would
	// hide the child's. GNU time is a small parent that reports its child.
	var rssFile string
	if _, err := os.Stat(gnuTime); err == nil && rss {
		f, err := os.CreateTemp("", "bench-rss-")
		if err == nil {
			f.Close()
			rssFile = f.Name()
			defer os.Remove(rssFile)
			args = append([]string{"-f", "%M", "-o", rssFile, name}, args...)
			name = gnuTime
		}
	}
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err := cmd.Run()
	m := measured{wall: time.Since(start)}
	if ps := cmd.ProcessState; ps != nil {
		// wait4 reports the child and the children it reaped: GNU
		// time's figure includes the measured command.
		m.cpu = ps.UserTime() + ps.SystemTime()
	}
	if rssFile != "" {
		b, _ := os.ReadFile(rssFile)
		var kb int64
		if _, err := fmt.Sscanf(lastLine(string(b)), "%d", &kb); err == nil {
			m.maxRSS = kb << 10
		}
	} else if rss && cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru != nil {
			m.maxRSS = ru.Maxrss << 10 // KiB; an upper bound, see above
		}
	}
	if err != nil {
		return m, fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, lastLine(out.String()))
	}
	return m, nil
}

// side is one contender of a bench round: how to run it once, and where
// its figures go.
type side struct {
	run  func() (measured, error)
	into *[]measured
}

// runRound runs every side once, round r starting with side r (modulo
// their number), so that each goes first as often as the others: on this
// machine the first run after another's removal, or the first large write
// of a case, pays for what came before it.
func runRound(sides []side, r int) error {
	for j := range sides {
		s := sides[(r+j)%len(sides)]
		m, err := s.run()
		if err != nil {
			return err
		}
		*s.into = append(*s.into, m)
	}
	return nil
}

// shell runs a shell pipeline, timed.
func shell(timeout time.Duration, script string) (measured, error) {
	return runTimed(timeout, "/bin/sh", "-c", script)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

var dropWarned sync.Once

// dropCaches empties the page cache so that a cold run reads the
// registry's storage from disk; called before each side's cold run alike.
func dropCaches() {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		dropWarned.Do(func() { logf("cannot drop caches (%v): cold runs are page-cache warm", err) })
	}
}

// cleanups run at exit, last first, also on SIGINT/SIGTERM: children,
// mounts and daemons must never outlive the bench.
var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

func atExit(f func()) {
	cleanupMu.Lock()
	cleanups = append(cleanups, f)
	cleanupMu.Unlock()
}

func runCleanups() {
	cleanupMu.Lock()
	fs := cleanups
	cleanups = nil
	cleanupMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// best returns the fastest wall time of ms (with the busy writer's CPU
// during that run), the least CPU time and the highest peak RSS.
func best(ms []measured) measured {
	var b measured
	for i, m := range ms {
		if i == 0 || m.wall < b.wall {
			b.wall, b.writerCPU = m.wall, m.writerCPU
		}
		if i == 0 || m.cpu < b.cpu {
			b.cpu = m.cpu
		}
		b.maxRSS = max(b.maxRSS, m.maxRSS)
	}
	return b
}

// secs shows a time to the millisecond below a second (first-byte times
// of 0.15 s meet or miss their goals by a few milliseconds), else to the
// hundredth.
func secs(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.3fs", d.Seconds())
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func ratio(ours, base time.Duration) string {
	if base <= 0 {
		return "-"
	}
	// Three decimals below 0.1x, where the goals are 0.1x and 0.05x and
	// two would round 0.054x to a goal met.
	r := ours.Seconds() / base.Seconds()
	if r < 0.1 {
		return fmt.Sprintf("%.3fx", r)
	}
	return fmt.Sprintf("%.2fx", r)
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// stopGroup sends SIGTERM to a child's process group, SIGKILL after grace.
func stopGroup(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) {
	pid := cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	}
}

// startDaemon starts a long-running child in its own process group, logging
// to logPath, and returns a channel closed when it exits.
func startDaemon(logPath string, name string, args ...string) (*exec.Cmd, <-chan struct{}, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	defer logf.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	return cmd, done, nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	return lastLine(string(b))
}

func exited(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}
