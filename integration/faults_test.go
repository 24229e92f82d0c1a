package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/internal/faultproxy"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// faultImage is an image whose one layer is about 1 MiB of incompressible
// bytes, so that a cut or a flipped byte lands well inside a body.
func faultImage(t *testing.T) *testimage.Image {
	t.Helper()
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(7)).Read(data)
	img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{{Files: []testimage.File{
		testimage.Dir("data", 0o755), {Path: "data/random", Mode: 0o644, Data: data},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// faultRegistry is a registry holding img as lab/faults:1 behind a fault proxy.
func faultRegistry(t *testing.T, img *testimage.Image) (*faultproxy.Proxy, string) {
	t.Helper()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	pushTestImage(t, reg, "lab/faults", "1", img)
	p, err := faultproxy.Start(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, p.Host + "/lab/faults:1"
}

// storeBlobs is `content ls -q` as a sorted list.
func storeBlobs(c *cli) []string {
	out := lines(c.OK(nil, "content", "ls", "-q"))
	slices.Sort(out)
	return out
}

// requireNoWrongBytes checks that every file under blobs/ hashes to its
// name and that content verify agrees.
func requireNoWrongBytes(t *testing.T, c *cli) {
	t.Helper()
	dir := filepath.Join(c.Root, "blobs", "sha256")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != e.Name() {
			t.Errorf("blobs/sha256/%s holds bytes that hash to %x", e.Name(), sum)
		}
	}
	c.OK(nil, "content", "verify")
}

func TestPullRetriesTransientFaults(t *testing.T) {
	t.Parallel()
	img := faultImage(t)
	layer := img.Layers[0]
	p, ref := faultRegistry(t, img)
	for _, tc := range []struct {
		name    string
		pattern string
		fault   faultproxy.Fault
		check   func(t *testing.T, reqs []faultproxy.Request)
	}{
		{"503 twice", faultproxy.Blob(layer.Digest), faultproxy.Fault{Kind: faultproxy.Status, Status: 503, Times: 2},
			func(t *testing.T, reqs []faultproxy.Request) {
				if got := statuses(reqs, layer.Digest); !slices.Equal(got, []int{503, 503, 200}) {
					t.Errorf("layer answers %v, want 503 503 200", got)
				}
			}},
		{"429 with Retry-After", faultproxy.Manifest("1"), faultproxy.Fault{Kind: faultproxy.Status, Status: 429, RetryAfter: "1", Times: 1},
			func(t *testing.T, reqs []faultproxy.Request) {
				n := 0
				for _, r := range reqs {
					if strings.HasSuffix(r.Path, "/manifests/1") {
						n++
					}
				}
				if n < 2 {
					t.Errorf("tag asked %d times, want a retry after the 429", n)
				}
			}},
		{"connection dropped mid-blob", faultproxy.Blob(layer.Digest), faultproxy.Fault{Kind: faultproxy.Drop, Method: "GET", After: layer.Size / 2, Times: 1},
			func(t *testing.T, reqs []faultproxy.Request) {
				var ranges []string
				for _, r := range reqs {
					if strings.HasSuffix(r.Path, layer.Digest.String()) {
						ranges = append(ranges, r.Range)
					}
				}
				if len(ranges) != 2 || ranges[0] != "" || !strings.HasPrefix(ranges[1], "bytes=") || ranges[1] == "bytes=0-" {
					t.Errorf("layer requests' Range headers %q: want a whole GET, then a resume from where it broke", ranges)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.Reset()
			before := len(p.Requests())
			if err := p.Set(tc.pattern, tc.fault); err != nil {
				t.Fatal(err)
			}
			c := newCLI(t)
			c.OK(nil, "image", "pull", "--plain-http", ref)
			tc.check(t, p.Requests()[before:])
			want := []string{img.Manifest.Digest.String(), img.Config.Digest.String(), layer.Digest.String()}
			slices.Sort(want)
			if got := storeBlobs(c); !slices.Equal(got, want) {
				t.Errorf("store holds %v, want %v", got, want)
			}
			requireNoWrongBytes(t, c)
		})
	}
}

// statuses lists the answers to requests for blob d, in order.
func statuses(reqs []faultproxy.Request, d digest.Digest) []int {
	var out []int
	for _, r := range reqs {
		if strings.HasSuffix(r.Path, "/blobs/"+d.String()) {
			out = append(out, r.Status)
		}
	}
	return out
}

func TestPullFailsPermanentFaults(t *testing.T) {
	t.Parallel()
	img := faultImage(t)
	layer := img.Layers[0]
	p, ref := faultRegistry(t, img)
	for _, tc := range []struct {
		name  string
		fault faultproxy.Fault
		msgs  []string
	}{
		{"permanent 500", faultproxy.Fault{Kind: faultproxy.Status, Status: 500}, []string{"500 Internal Server Error", layer.Digest.String()}},
		{"wrong bytes", faultproxy.Fault{Kind: faultproxy.Corrupt, After: layer.Size / 3}, []string{"digest mismatch", layer.Digest.String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.Reset()
			p.Set(faultproxy.Blob(layer.Digest), tc.fault)
			c := newCLI(t)
			c.Fail(1, nil, []string{"image", "pull", "--plain-http", ref}, tc.msgs...)
			if n := p.Count(faultproxy.Blob(layer.Digest)); n < 1 || n > 10 {
				t.Errorf("layer asked %d times, want a bounded number of tries", n)
			}
			blobs := storeBlobs(c)
			if slices.Contains(blobs, layer.Digest.String()) {
				t.Errorf("the failed layer is in the store: %v", blobs)
			}
			if got := c.OK(nil, "image", "ls", "-q"); strings.TrimSpace(got) != "" {
				t.Errorf("a failed pull recorded an image: %q", got)
			}
			requireNoWrongBytes(t, c)
			// No partial download of wrong bytes waits for a resume.
			for _, l := range lines(c.OK(nil, "content", "active", "--format", "json")) {
				if tc.fault.Kind == faultproxy.Corrupt && strings.Contains(l, layer.Digest.String()) && !strings.Contains(l, `"offset":0`) {
					t.Errorf("unverified bytes kept for a resume: %s", l)
				}
			}
			// The same store pulls fine once the registry behaves.
			p.Reset()
			c.OK(nil, "image", "pull", "--plain-http", ref)
			requireNoWrongBytes(t, c)
		})
	}
}

// TestLazyReadStalledRegistry: a read through the mount of a blob whose
// registry does not answer fails with EIO once the fetch timeout passes,
// the rest of the mount keeps working, and the same read succeeds once the
// registry answers again.
func TestLazyReadStalledRegistry(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	img := faultImage(t)
	layer := img.Layers[0]
	p, ref := faultRegistry(t, img)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "--lazy", ref)
	if _, err := os.Stat(filepath.Join(c.Root, "blobs", "sha256", layer.Digest.Encoded())); err == nil {
		t.Fatal("a lazy pull downloaded the layer")
	}
	mnt := mountCASFS(t, c, "--fetch-timeout", "3s")
	p.Set(faultproxy.Blob(layer.Digest), faultproxy.Fault{Kind: faultproxy.Stall})

	// Generous outer bound: the assertion is that cat returns on its own
	// with EIO, long before this.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	blob := filepath.Join(mnt, "blobs", "sha256", layer.Digest.Encoded())
	var stderr bytes.Buffer
	cat := exec.CommandContext(ctx, "cat", blob)
	cat.Stdout, cat.Stderr = nil, &stderr
	err := cat.Run()
	if ctx.Err() != nil {
		t.Fatalf("cat of a stalled lazy blob did not return before the test's own deadline")
	}
	if err == nil || !strings.Contains(stderr.String(), "Input/output error") {
		t.Fatalf("cat of a stalled lazy blob: %v, stderr %q; want EIO", err, stderr.String())
	}
	if p.Count(faultproxy.Blob(layer.Digest)) < 1 {
		t.Fatal("the mount never asked the registry for the layer")
	}

	// The mount still serves what is local.
	cfg, err := os.ReadFile(filepath.Join(mnt, "blobs", "sha256", img.Config.Digest.Encoded()))
	if err != nil || !bytes.Equal(cfg, img.Blobs[img.Config.Digest]) {
		t.Fatalf("local config through the mount after the failed read: %v", err)
	}

	p.Reset()
	got, err := exec.CommandContext(ctx, "cat", blob).Output()
	if err != nil || digest.FromBytes(got) != layer.Digest {
		t.Fatalf("read after the registry recovered: %v, %d bytes", err, len(got))
	}
	requireNoWrongBytes(t, c)
}

// A registry that sends a little now and then, never idle long enough for a
// timeout, fails the pull by the progress deadline (blobs, after the retry
// policy's tries) or the manifest deadline, naming which.
func TestPullReadDeadlines(t *testing.T) {
	t.Parallel()
	img := faultImage(t)
	layer := img.Layers[0]
	p, ref := faultRegistry(t, img)

	c := newCLI(t)
	if err := p.Set(faultproxy.Blob(layer.Digest), faultproxy.Fault{Kind: faultproxy.Trickle, Method: "GET", Every: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	c.Fail(1, nil, []string{"image", "pull", "--plain-http", "--progress-timeout", "1s", "--progress-kib", "16", ref},
		layer.Digest.String(), "less than 16 KiB in 1s (progress deadline)")
	if n := p.Count(faultproxy.Blob(layer.Digest)); n < 2 {
		t.Errorf("the slow blob was tried %d times; the retry policy allows more", n)
	}
	p.Reset()

	if err := p.Set(`^/v2/lab/faults/manifests/`, faultproxy.Fault{Kind: faultproxy.Trickle, Method: "GET", After: 10, Every: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	c = newCLI(t) // one whose manifests are not local yet
	c.Fail(1, nil, []string{"image", "pull", "--plain-http", "--manifest-timeout", "2s", ref}, "within 2s (manifest deadline)")
	p.Reset()

	// hosts.toml sets the same for a host; a healthy registry pulls fine.
	hosts := t.TempDir()
	os.MkdirAll(filepath.Join(hosts, p.Host), 0o755)
	os.WriteFile(filepath.Join(hosts, p.Host, "hosts.toml"), []byte("server = \"http://"+p.Host+"\"\nprogress_timeout = \"1s\"\nprogress_bytes = 16384\n"), 0o644)
	if err := p.Set(faultproxy.Blob(layer.Digest), faultproxy.Fault{Kind: faultproxy.Trickle, Method: "GET", Every: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	c.Fail(1, nil, []string{"image", "pull", "--hosts-dir", hosts, ref}, "less than 16 KiB in 1s (progress deadline)")
	p.Reset()
	c.OK(nil, "image", "pull", "-q", "--hosts-dir", hosts, ref)
	c.Fail(2, nil, []string{"image", "pull", "--progress-timeout", "-1s", ref}, "--progress-timeout")
}
