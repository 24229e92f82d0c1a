package integration

import (
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/faultproxy"
)

// startStuckPull starts a pull whose layer download holds after its first
// bytes, and returns once the download has begun (the pull's lease exists
// by then).
func startStuckPull(t *testing.T, c *cli, p *faultproxy.Proxy, layer string, ref string) (*exec.Cmd, chan error) {
	t.Helper()
	before := p.Count(layer)
	cmd := c.command(nil, "image", "pull", "--plain-http", ref)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	waitFor(t, time.Minute, "the layer download", func() bool { return p.Count(layer) > before })
	return cmd, done
}

// Interrupted pulls release their leases: SIGINT or SIGTERM of a pull
// without a daemon, SIGTERM of a daemon during a pull. A pull killed
// outright leaves its lease, which check reports and check --repair
// removes.
func TestInterruptedPullReleasesLease(t *testing.T) {
	t.Parallel()
	img := faultImage(t)
	p, ref := faultRegistry(t, img)
	layer := faultproxy.Blob(img.Layers[0].Digest)
	if err := p.Set(layer, faultproxy.Fault{Kind: faultproxy.StallBody, Method: "GET", After: 1000}); err != nil {
		t.Fatal(err)
	}
	noLeases := func(c *cli) {
		t.Helper()
		if got := strings.TrimSpace(c.OK(nil, "lease", "ls", "-q")); got != "" {
			t.Fatalf("leases left: %q", got)
		}
	}

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		c := newCLI(t)
		cmd, done := startStuckPull(t, c, p, layer, ref)
		cmd.Process.Signal(sig)
		var ee *exec.ExitError
		if err := <-done; err == nil || !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("pull after %v: %v, want exit status 1", sig, err)
		}
		noLeases(c)
	}

	c := newCLI(t)
	cmd, done := startStuckPull(t, c, p, layer, ref)
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
	r := c.Run(nil, "check")
	if r.Code != 0 || !strings.Contains(r.Stdout, "note: lease") || !strings.Contains(r.Stdout, "which is gone") {
		t.Fatalf("check after a killed pull: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	r = c.Run(nil, "check", "--repair")
	if r.Code != 0 || !strings.Contains(r.Stdout, "repaired: lease") {
		t.Fatalf("check --repair: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	noLeases(c)

	// A daemon stopped during a pull cancels it within its grace and
	// releases the lease before it lets go of the store.
	c = newCLI(t)
	mnt := mountCASFS(t, c)
	_, done = startStuckPull(t, c, p, layer, ref)
	out, err := exec.Command("pgrep", "-f", "notify-fd 3.*"+mnt).Output()
	if err != nil {
		t.Fatalf("daemon pid: %v", err)
	}
	pid := strings.Fields(string(out))[0]
	if err := exec.Command("kill", "-TERM", pid).Run(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("the pull succeeded while its daemon stopped")
	}
	waitFor(t, time.Minute, "the daemon to stop", func() bool {
		return exec.Command("kill", "-0", pid).Run() != nil
	})
	noLeases(c)
}
