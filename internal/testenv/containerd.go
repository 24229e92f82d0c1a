package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// containerdBinary and ctrBinary are Debian's containerd package.
const (
	containerdBinary = "containerd"
	ctrBinary        = "ctr"
)

// Containerd is a containerd daemon owned by one test, with its own root,
// state and socket: nothing of the machine's containerd is shared.
type Containerd struct {
	Socket  string // the gRPC unix socket
	Address string // what `ctr --address` takes (the socket path)
	Root    string // --root: content store, metadata, snapshots
	State   string // --state
	Config  string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
}

// StartContainerd starts containerd with a minimal configuration (no CRI
// and no snapshotters this machine cannot run), waits until its socket
// accepts connections and stops it when the test ends.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	Require(t, containerdBinary, ctrBinary)
	bin, _ := lookPath(containerdBinary)
	dir := t.TempDir()
	// A unix socket path must fit in 108 bytes; test temp dirs can be long.
	sockDir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	c := &Containerd{
		Socket:  filepath.Join(sockDir, "c.sock"),
		Root:    filepath.Join(dir, "root"),
		State:   filepath.Join(dir, "state"),
		Config:  filepath.Join(dir, "config.toml"),
		LogPath: filepath.Join(dir, "containerd.log"),
	}
	c.Address = c.Socket
	if err := os.WriteFile(c.Config, []byte(c.config(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(c.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--root", c.Root, "--state", c.State, "--address", c.Socket, "--config", c.Config, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := startChild(cmd); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	c.cmd, c.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(c.stop)
	if err := c.waitReady(); err != nil {
		t.Fatalf("containerd did not become ready: %v\n--- containerd log ---\n%s", err, c.logTail())
	}
	return c
}

func (c *Containerd) config(dir string) string {
	q := strconv.Quote
	return fmt.Sprintf(`version = 2
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

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
`, q(c.Socket), q(c.Socket+".ttrpc"), q(filepath.Join(dir, "opt")))
}

func (c *Containerd) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if conn, err := net.DialTimeout("unix", c.Socket, time.Second); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("containerd exited")
		case <-ctx.Done():
			return fmt.Errorf("socket %s not accepting connections within %s", c.Socket, readyTimeout)
		case <-tick.C:
		}
	}
}

func (c *Containerd) stop() {
	pgid := c.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-c.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func (c *Containerd) logTail() string {
	b, _ := os.ReadFile(c.LogPath)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// Ctr runs `ctr --address SOCKET args...` (bounded to two minutes) and
// returns its stdout; it fails t with ctr's stderr when ctr fails.
func (c *Containerd) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin, _ := lookPath(ctrBinary)
	cmd := exec.CommandContext(ctx, bin, append([]string{"--address", c.Address}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ctr %v: %v\nstderr: %s\n--- containerd log ---\n%s", args, err, errb.String(), c.logTail())
	}
	return out.String()
}
