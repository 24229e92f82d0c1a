package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// containerd is Debian's containerd started by the bench with its own
// root, state directory and socket, so that every cold run starts empty.
type containerd struct {
	dir  string
	sock string
	cmd  *exec.Cmd
	done <-chan struct{}
	// remove takes its directories away once it has stopped (by default
	// at once; a cold-run loop defers it with env.discard).
	remove func(string)
}

var containerdSeq int

func startContainerd(work string) (*containerd, error) {
	containerdSeq++
	c := &containerd{dir: filepath.Join(work, "containerd-"+strconv.Itoa(containerdSeq))}
	c.sock = filepath.Join(c.dir, "containerd.sock")
	root, state := filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	q := strconv.Quote
	config := fmt.Sprintf(`version = 2
root = %s
state = %s
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %s
[ttrpc]
  address = %s
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %s
`, q(root), q(state), q(c.sock), q(c.sock+".ttrpc"), q(filepath.Join(c.dir, "opt")))
	cfg := filepath.Join(c.dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(c.dir, "containerd.log")
	var err error
	c.cmd, c.done, err = startDaemon(logPath, "containerd", "--config", cfg, "--root", root, "--state", state, "--address", c.sock, "--log-level", "warn")
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	atExit(c.stop)
	err = waitFor(20*time.Second, "containerd", func() bool {
		if exited(c.done) {
			return true
		}
		conn, err := net.Dial("unix", c.sock)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
	if err == nil && exited(c.done) {
		err = fmt.Errorf("containerd exited: %s", tail(logPath))
	}
	if err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// ctr is the argument list of a ctr command against this containerd.
func (c *containerd) ctr(args ...string) []string {
	return append([]string{"--address", c.sock}, args...)
}

func (c *containerd) run(timeout time.Duration, args ...string) (measured, error) {
	return runTimed(timeout, "ctr", c.ctr(args...)...)
}

// cpu is the user+sys time the containerd daemon has used so far: a pull's
// work (fetch, unpack) happens there, not in ctr.
func (c *containerd) cpu() time.Duration { return procCPU(c.cmd.Process.Pid) }

// stop ends containerd and removes its directories. Calling it again does
// nothing.
func (c *containerd) stop() {
	if c.cmd == nil {
		return
	}
	stopGroup(c.cmd, c.done, 10*time.Second)
	c.cmd = nil
	if c.remove != nil {
		c.remove(c.dir)
		return
	}
	os.RemoveAll(c.dir)
}
