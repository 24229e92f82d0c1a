package integration

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/faultproxy"
	"github.com/casfs/casfs/internal/testimage"
)

// A layer that fails while a bigger layer above it is still downloading
// fails the whole pull promptly, naming the layer and the cause. It used to
// hang: the unpacker waited for layer 0, the upper layer's stream buffer
// filled, and its download blocked writing into it without watching the
// pull's context.
func TestPullFailingLayerCancelsWholePull(t *testing.T) {
	t.Parallel()
	// Random, so it compresses to about its size: larger than the 9 MiB
	// the proxy holds it at, which is larger than a layer stream's buffer.
	upper := make([]byte, 12<<20)
	rand.New(rand.NewSource(16)).Read(upper)
	img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{
		{Files: []testimage.File{testimage.Reg("lower", 0o644, "lower\n")}},
		{Files: []testimage.File{{Path: "upper", Mode: 0o644, Data: upper}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	p, ref := faultRegistry(t, img)
	lower, big := img.Layers[0], img.Layers[1]
	// The upper layer sends 9 MiB (more than the 8 MiB a layer stream
	// buffers) and holds; layer 0 answers 404 only once that is so.
	held, fail := make(chan struct{}), make(chan struct{})
	if err := p.Set(faultproxy.Blob(big.Digest), faultproxy.Fault{Kind: faultproxy.StallBody, Method: "GET", After: 9 << 20, Times: 1,
		OnHold: sync.OnceFunc(func() { close(held) })}); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(faultproxy.Blob(lower.Digest), faultproxy.Fault{Kind: faultproxy.Status, Status: 404, Wait: fail}); err != nil {
		t.Fatal(err)
	}

	c := newRaceCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, casfsBin, "--root", c.Root, "image", "pull", "--plain-http", ref)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-held:
	case err := <-done:
		t.Fatalf("pull ended before the upper layer was in flight: %v\n%s", err, stderr.String())
	case <-ctx.Done():
		t.Fatalf("the upper layer never reached 9 MiB\n%s", p)
	}
	close(fail)
	failed := time.Now()
	err = <-done
	t.Logf("pull ended %v after layer 0 failed: %s", time.Since(failed), strings.TrimSpace(stderr.String()))
	if ctx.Err() != nil {
		t.Fatalf("pull hung after layer 0 failed (killed after the test's bound)\nstderr: %s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("pull: %v, want exit status 1\nstderr: %s", err, stderr.String())
	}
	last := strings.TrimSpace(stderr.String())
	if i := strings.LastIndex(last, "\n"); i >= 0 {
		last = last[i+1:]
	}
	if !strings.HasPrefix(last, "casfs: pull "+ref+": blob "+lower.Digest.String()) || !strings.Contains(last, "not found") {
		t.Errorf("error line %q should name layer %s and the cause (not found)", last, lower.Digest)
	}
}
