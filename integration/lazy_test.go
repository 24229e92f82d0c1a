package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/internal/faultproxy"
	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// estargzImage is a runnable two-layer eStargz image: the busybox base, and
// a top layer with the entry kinds a lazy tree must get right (whiteout,
// opaque directory, hardlinks, xattrs, a setuid file), a large file that
// spans many chunks and many small files.
func estargzImage(t *testing.T) *testimage.Image {
	t.Helper()
	rnd := rand.New(rand.NewPCG(7, 7))
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(rnd.Uint32())
	}
	base := append(busyboxBase(t),
		testimage.Dir("var", 0o755), testimage.Dir("var/cache", 0o755), testimage.Reg("var/cache/old", 0o644, "hidden by an opaque dir\n"))
	top := []testimage.File{
		testimage.Dir("etc", 0o755),
		testimage.Reg("etc/motd", 0o644, "hello from casfs\n"),
		{Path: "etc/motd.link", Hardlink: true, Linkname: "etc/motd"},
		testimage.Whiteout("etc", "gone"),
		testimage.Dir("var", 0o755), testimage.Dir("var/cache", 0o755), testimage.Opaque("var/cache"),
		testimage.Reg("var/cache/new", 0o644, "new\n"),
		{Path: "usr/bin/passwd-like", Mode: os.ModeSetuid | 0o755, Data: []byte("#!/bin/sh\n"), Xattrs: map[string]string{"user.casfs": "x"}},
		{Path: "usr/share/big", Mode: 0o644, Data: big},
	}
	for i := range 300 {
		top = append(top, testimage.Reg(fmt.Sprintf("usr/share/small/%03d", i), 0o644, strings.Repeat(strconv.Itoa(i), 50)))
	}
	img, err := testimage.Build(testimage.ImageSpec{
		Layers: []testimage.Layer{{Files: base, Compression: "estargz"}, {Files: top, Compression: "estargz", ChunkSize: 1 << 20}},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// lazyFixture starts a registry with estargzImage pushed as repo:1 and a
// counting proxy in front of it; ref names the image through the proxy.
func lazyFixture(t *testing.T, repo string) (*testenv.Registry, *testimage.Image, *faultproxy.Proxy, string) {
	t.Helper()
	testenv.RequireRoot(t)
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := estargzImage(t)
	pushTestImage(t, reg, repo, "1", img)
	proxy, err := faultproxy.Start(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	return reg, img, proxy, proxy.Host + "/" + repo + ":1"
}

// layerBytes sums what the proxy served of the image's layer blobs, from the
// Range headers (a GET without one counts the whole blob).
func layerBytes(t *testing.T, p *faultproxy.Proxy, img *testimage.Image) int64 {
	t.Helper()
	var n int64
	for _, r := range p.Requests() {
		for _, l := range img.Layers {
			if r.Method != "GET" || !strings.HasSuffix(r.Path, "/blobs/"+l.Digest.String()) {
				continue
			}
			if r.Range == "" {
				n += l.Size
				continue
			}
			var a, b int64
			if _, err := fmt.Sscanf(r.Range, "bytes=%d-%d", &a, &b); err != nil {
				t.Fatalf("unexpected Range %q", r.Range)
			}
			n += b - a + 1
		}
	}
	return n
}

// infoLayer is one layer as `image info` shows it.
type infoLayer struct {
	Digest digest.Digest
	State  string
	Cached int64
}

// infoLayers is the layers `image info` shows for ref.
func infoLayers(t *testing.T, c *cli, ref string) []infoLayer {
	t.Helper()
	var info struct{ Layers []infoLayer }
	if err := json.NewDecoder(strings.NewReader(c.OK(nil, "image", "info", ref))).Decode(&info); err != nil {
		t.Fatalf("image info %s: %v", ref, err)
	}
	return info.Layers
}

// layerStates is the state `image info` gives each layer of ref.
func layerStates(t *testing.T, c *cli, ref string) map[digest.Digest]string {
	t.Helper()
	out := map[digest.Digest]string{}
	for _, l := range infoLayers(t, c, ref) {
		out[l.Digest] = l.State
	}
	return out
}

// describeTree lists every path under dir (not dir itself) with type,
// mode, owner, size, link count, symlink target, xattrs and, with content,
// a hash of the file's bytes.
func describeTree(t *testing.T, dir string, content bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		d := fmt.Sprintf("%o %d:%d size=%d nlink=%d", st.Mode, st.Uid, st.Gid, st.Size, st.Nlink)
		if fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			d += " -> " + target
		}
		buf := make([]byte, 1024)
		if n, err := unix.Llistxattr(p, buf); err == nil && n > 0 {
			names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
			sort.Strings(names)
			for _, x := range names {
				v := make([]byte, 256)
				m, _ := unix.Lgetxattr(p, x, v)
				d += fmt.Sprintf(" %s=%q", x, v[:max(m, 0)])
			}
		}
		if content && fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			d += fmt.Sprintf(" sha256=%x", sha256.Sum256(b))
		}
		out[rel] = d
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

// TestLazyEStargzRunsBeforeDownload: a lazy pull of an eStargz image
// (without background completion) fetches only footers and TOCs; the mount lists the whole rootfs with no
// layer bytes fetched, a small file's read fetches about its chunk, runc
// runs in the rootfs, and the tree and contents equal an eager pull's.
func TestLazyEStargzRunsBeforeDownload(t *testing.T) {
	reg, img, proxy, ref := lazyFixture(t, "lab/estargz")
	var total int64
	for _, l := range img.Layers {
		total += l.Size
	}

	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "--lazy", "--lazy-complete=false", "-q", ref)
	for _, l := range img.Layers {
		if _, err := os.Stat(filepath.Join(c.Root, "blobs", "sha256", l.Digest.Encoded())); !os.IsNotExist(err) {
			t.Fatalf("lazy pull stored layer %s: %v", l.Digest, err)
		}
		toc := l.Annotations["containerd.io/snapshot/stargz/toc.digest"]
		if !strings.Contains(c.OK(nil, "content", "ls", "-q"), toc) {
			t.Fatalf("lazy pull did not keep the TOC %s of layer %s", toc, l.Digest)
		}
	}
	pulled := layerBytes(t, proxy, img)
	if pulled == 0 || pulled > total/20 {
		t.Fatalf("lazy pull fetched %d of %d layer bytes, want under 5%%", pulled, total)
	}

	mnt := mountCASFS(t, c, "--fetch-timeout", "10s")
	rootfs, err := filepath.EvalSymlinks(filepath.Join(mnt, "images", proxy.Host, "lab", "estargz", "1", "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	lazyTree := describeTree(t, rootfs, false)
	if got := layerBytes(t, proxy, img); got != pulled {
		t.Fatalf("listing the lazy rootfs fetched %d layer bytes, want none", got-pulled)
	}
	for _, gone := range []string{"etc/gone", "var/cache/old", "stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"} {
		if _, ok := lazyTree[gone]; ok {
			t.Errorf("%s shows in the lazy rootfs", gone)
		}
	}
	if len(lazyTree) < 300 {
		t.Fatalf("lazy rootfs has %d entries", len(lazyTree))
	}

	b, err := os.ReadFile(filepath.Join(rootfs, "etc", "motd"))
	if err != nil || string(b) != "hello from casfs\n" {
		t.Fatalf("etc/motd of the lazy rootfs: %q %v", b, err)
	}
	if got := layerBytes(t, proxy, img) - pulled; got == 0 || got > 64<<10 {
		t.Fatalf("reading a 17-byte file fetched %d layer bytes", got)
	}

	out := runcRun(t, rootfs, "/bin/sh", "-c", "cat /etc/motd /etc/motd.link; ls /var/cache")
	if out != "hello from casfs\nhello from casfs\nnew\n" {
		t.Fatalf("runc in the lazy rootfs: %q", out)
	}
	if got := layerBytes(t, proxy, img); got > total/2 {
		t.Fatalf("starting a shell fetched %d of %d layer bytes", got, total)
	}

	// The same image pulled eagerly shows the same tree with the same bytes.
	e := newCLI(t)
	e.OK(nil, "image", "pull", "--plain-http", "-q", reg.Ref("lab/estargz", "1"))
	emnt := mountCASFS(t, e)
	eroot, err := filepath.EvalSymlinks(filepath.Join(emnt, "images", reg.Host, "lab", "estargz", "1", "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	want := describeTree(t, eroot, true)
	got := describeTree(t, rootfs, true)
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: lazy %q, eager %q", p, got[p], w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: only in the lazy rootfs", p)
		}
	}
}

// TestLazyEStargzCompletes: the mount completes a lazily pulled eStargz
// image in the background (retrying while the registry holds a layer back):
// the layers become verified blobs and snapshots, image check passes, the
// chunk caches go, and a file opened before the switch reads to its end.
func TestLazyEStargzCompletes(t *testing.T) {
	_, img, proxy, ref := lazyFixture(t, "lab/complete")
	base, top := img.Layers[0], img.Layers[1]

	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "--lazy", "-q", ref)
	hold := faultproxy.Blob(top.Digest)
	if err := proxy.Set(hold, faultproxy.Fault{Kind: faultproxy.Stall}); err != nil {
		t.Fatal(err)
	}
	mnt := mountCASFS(t, c, "--fetch-timeout", "5s")
	rootfs, err := filepath.EvalSymlinks(filepath.Join(mnt, "images", proxy.Host, "lab", "complete", "1", "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(rootfs, "bin", "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 4096)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatalf("read busybox before completion: %v", err)
	}
	blobFile := func(d digest.Digest) string { return filepath.Join(c.Root, "blobs", "sha256", d.Encoded()) }
	waitFor(t, 60*time.Second, "base layer committed while the top one is held", func() bool {
		_, err := os.Stat(blobFile(base.Digest))
		return err == nil
	})
	if _, err := os.Stat(blobFile(top.Digest)); !os.IsNotExist(err) {
		t.Fatalf("held layer committed: %v", err)
	}
	if r := c.Run(nil, "image", "check", ref); r.Code != 1 {
		t.Fatalf("image check before completion: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := layerStates(t, c, ref); got[base.Digest] != "local" || got[top.Digest] != "lazy" {
		t.Fatalf("image info while the top layer is held: %v, want base local and top lazy", got)
	}
	proxy.Clear(hold)
	waitFor(t, 90*time.Second, "image check passing after completion", func() bool {
		return c.Run(nil, "image", "check", ref).Code == 0
	})
	for _, l := range img.Layers {
		b, err := os.ReadFile(blobFile(l.Digest))
		if err != nil || digest.FromBytes(b) != l.Digest {
			t.Fatalf("layer %s after completion: %v", l.Digest, err)
		}
	}
	if got := layerStates(t, c, ref); got[base.Digest] != "local" || got[top.Digest] != "local" {
		t.Fatalf("image info after completion: %v, want every layer local", got)
	}
	waitFor(t, 30*time.Second, "chunk caches removed", func() bool {
		ents, _ := os.ReadDir(filepath.Join(c.Root, "lazy", "sha256"))
		return len(ents) == 0
	})
	rest, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read the rest of a file opened before the switch: %v", err)
	}
	bb, _ := exec.LookPath("busybox")
	orig, _ := os.ReadFile(bb)
	if got := append(head, rest...); !bytes.Equal(got, orig) {
		t.Fatalf("busybox read across the switch: %d bytes, want %d equal ones", len(got), len(orig))
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "usr", "share", "small", "042")); err != nil || string(b) != strings.Repeat("42", 50) {
		t.Fatalf("a file opened after the switch: %q %v", b, err)
	}
	c.OK(nil, "check")
}

// TestLazyEStargzResumesAfterKill: a mount daemon killed (SIGKILL) in the
// middle of background completion leaves its fetched ranges in the chunk
// cache; the next mount resumes completion from there, asks the registry
// for less than the whole layer, commits blobs that match their digests,
// and leaves a store that check finds clean.
func TestLazyEStargzResumesAfterKill(t *testing.T) {
	_, img, proxy, ref := lazyFixture(t, "lab/resume")
	top := img.Layers[1]
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "--lazy", "-q", ref)

	// Completion fetches the top layer in blob order, one request per
	// 4 MiB: the first passes, the second is held, and the daemon is
	// killed while it waits.
	if top.Size <= 8<<20 {
		t.Fatalf("top layer of %d bytes: the test needs more than two completion requests", top.Size)
	}
	held := make(chan struct{})
	var once sync.Once
	first, rest := faultproxy.Blob(top.Digest), "(?:)"+faultproxy.Blob(top.Digest)
	if err := proxy.Set(first, faultproxy.Fault{Kind: faultproxy.Pass, Method: "GET", Times: 1}); err != nil {
		t.Fatal(err)
	}
	if err := proxy.Set(rest, faultproxy.Fault{Kind: faultproxy.Stall, Method: "GET", OnHold: func() { once.Do(func() { close(held) }) }}); err != nil {
		t.Fatal(err)
	}
	mnt := mountCASFS(t, c, "--fetch-timeout", "5s")
	select {
	case <-held:
	case <-time.After(2 * cmdTimeout):
		t.Fatal("completion never asked for the top layer's second range")
	}
	out, err := exec.Command("pgrep", "-f", "notify-fd 3.*"+mnt).Output()
	pid, perr := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || perr != nil {
		t.Fatalf("mount daemon of %s: %q %v %v", mnt, out, err, perr)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	unmount(t, mnt)
	before := layerBytes(t, proxy, img)
	if got := lazyCached(t, c, ref, top.Digest); got < 4<<20 {
		t.Fatalf("chunk cache of the top layer holds %d bytes after the kill, want the first 4 MiB range", got)
	}
	proxy.Reset()

	mountCASFS(t, c, "--fetch-timeout", "5s")
	waitFor(t, 2*cmdTimeout, "image check passing after the resumed completion", func() bool {
		return c.Run(nil, "image", "check", ref).Code == 0
	})
	for _, l := range img.Layers {
		b, err := os.ReadFile(filepath.Join(c.Root, "blobs", "sha256", l.Digest.Encoded()))
		if err != nil || digest.FromBytes(b) != l.Digest {
			t.Fatalf("layer %s after the resumed completion: %v", l.Digest, err)
		}
	}
	if again := layerBytes(t, proxy, img) - before; again > top.Size-4<<20 {
		t.Fatalf("the resumed completion fetched %d layer bytes; the cached 4 MiB of the top layer (%d bytes) were fetched again", again, top.Size)
	}
	c.OK(nil, "check")
}

// lazyCached is the bytes the chunk cache of layer d of ref holds, as
// image info reports them; d must be lazy.
func lazyCached(t *testing.T, c *cli, ref string, d digest.Digest) int64 {
	t.Helper()
	for _, l := range infoLayers(t, c, ref) {
		if l.Digest == d {
			if l.State != "lazy" {
				t.Fatalf("layer %s is %s, want lazy", d, l.State)
			}
			return l.Cached
		}
	}
	t.Fatalf("image info %s lists no layer %s", ref, d)
	return 0
}

// TestLazyEStargzFailures: a chunk corrupted on the way is EIO and is not
// cached; with the registry stopped an uncached read is EIO within the
// fetch bound while cached files still read; back again, reads work.
func TestLazyEStargzFailures(t *testing.T) {
	reg, img, proxy, ref := lazyFixture(t, "lab/faults")
	top := img.Layers[1]

	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "--lazy", "--lazy-complete=false", "-q", ref)
	mnt := mountCASFS(t, c, "--fetch-timeout", "3s")
	rootfs, err := filepath.EvalSymlinks(filepath.Join(mnt, "images", proxy.Host, "lab", "faults", "1", "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "etc", "motd")); err != nil || string(b) != "hello from casfs\n" {
		t.Fatalf("etc/motd: %q %v", b, err)
	}
	ranges := filepath.Join(c.Root, "lazy", "sha256", top.Digest.Encoded(), "ranges")
	before, err := os.ReadFile(ranges)
	if err != nil {
		t.Fatal(err)
	}

	rule := faultproxy.Blob(top.Digest)
	if err := proxy.Set(rule, faultproxy.Fault{Kind: faultproxy.Corrupt, After: 12}); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(rootfs, "usr", "share", "small", "007")
	if _, err := readWithin(small, 30*time.Second); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a corrupted chunk: %v, want EIO", err)
	}
	if after, _ := os.ReadFile(ranges); !bytes.Equal(after, before) {
		t.Fatalf("a corrupted chunk was cached: ranges %q -> %q", before, after)
	}
	proxy.Clear(rule)
	if b, err := readWithin(small, 30*time.Second); err != nil || string(b) != strings.Repeat("7", 50) {
		t.Fatalf("read after the corruption stopped: %q %v", b, err)
	}

	reg.Stop()
	start := time.Now()
	if _, err := readWithin(filepath.Join(rootfs, "usr", "share", "small", "123"), 60*time.Second); !errors.Is(err, syscall.EIO) {
		t.Fatalf("uncached read with the registry stopped: %v, want EIO", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("EIO came after %s, want it within the fetch bound", d)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "etc", "motd")); err != nil || string(b) != "hello from casfs\n" {
		t.Fatalf("cached etc/motd with the registry stopped: %q %v", b, err)
	}
	reg.Restart(t)
	if b, err := readWithin(filepath.Join(rootfs, "usr", "share", "small", "123"), 30*time.Second); err != nil || string(b) != strings.Repeat("123", 50) {
		t.Fatalf("read after the registry came back: %q %v", b, err)
	}
}

// TestImageConvertEStargz: image convert --estargz makes a copy that, once
// pushed, pulls lazily (served from its TOCs) with the source image's tree
// and bytes and runs; --oci converts it back to the same tree.
func TestImageConvertEStargz(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	src := pushTestImage(t, reg, "lab/conv", "src", busyboxImage(t))
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "-q", src)
	c.Fail(2, nil, []string{"image", "convert", src, "lab/conv:x"}, "one of --estargz, --zstdchunked and --oci")
	c.Fail(2, nil, []string{"image", "convert", "--estargz", "--zstdchunked", src, "lab/conv:x"}, "one of --estargz, --zstdchunked and --oci")
	lazyRef, zstdRef := reg.Ref("lab/conv", "estargz"), reg.Ref("lab/conv", "zstdchunked")
	c.OK(nil, "image", "convert", "--estargz", src, lazyRef)
	c.OK(nil, "image", "convert", "--zstdchunked", src, zstdRef)
	c.OK(nil, "image", "convert", "--oci", lazyRef, "lab/conv:oci")
	for _, ref := range []string{lazyRef, zstdRef} {
		c.OK(nil, "image", "push", "--plain-http", ref)
		c.OK(nil, "image", "check", ref)
	}

	mnt := mountCASFS(t, c)
	tree := func(mnt, host, repo, tag string) map[string]string {
		root, err := filepath.EvalSymlinks(filepath.Join(mnt, "images", host, repo, tag, "rootfs"))
		if err != nil {
			t.Fatal(err)
		}
		return describeTree(t, root, true)
	}
	want := tree(mnt, reg.Host, "lab/conv", "src")
	same := func(what string, got map[string]string) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: %d entries, source %d", what, len(got), len(want))
		}
		for p, w := range want {
			if got[p] != w {
				t.Errorf("%s: %s: %q, source %q", what, p, got[p], w)
			}
		}
	}
	same("converted to eStargz", tree(mnt, reg.Host, "lab/conv", "estargz"))
	same("converted to zstd:chunked", tree(mnt, reg.Host, "lab/conv", "zstdchunked"))
	same("converted back", tree(mnt, "docker.io", "lab/conv", "oci"))

	d := newCLI(t)
	d.OK(nil, "image", "pull", "--plain-http", "--lazy", "--lazy-complete=false", "-q", lazyRef)
	d.OK(nil, "image", "pull", "--plain-http", "--lazy", "--lazy-complete=false", "-q", zstdRef)
	dmnt := mountCASFS(t, d)
	same("pulled lazily", tree(dmnt, reg.Host, "lab/conv", "estargz"))
	same("pulled lazily as zstd:chunked", tree(dmnt, reg.Host, "lab/conv", "zstdchunked"))
	if ents, err := os.ReadDir(filepath.Join(d.Root, "lazy", "sha256")); err != nil || len(ents) != 4 {
		t.Fatalf("lazy pulls of the converted images have %d lazy layers (%v), want 2 each", len(ents), err)
	}
	zroot, _ := filepath.EvalSymlinks(filepath.Join(dmnt, "images", reg.Host, "lab/conv", "zstdchunked", "rootfs"))
	if b, err := os.ReadFile(filepath.Join(zroot, "etc", "motd")); err != nil || string(b) != "hello from casfs\n" {
		t.Fatalf("etc/motd read lazily from zstd:chunked: %q, %v", b, err)
	}
	root, _ := filepath.EvalSymlinks(filepath.Join(dmnt, "images", reg.Host, "lab/conv", "estargz", "rootfs"))
	if out := runcRun(t, root, "/bin/cat", "/etc/motd"); out != "hello from casfs\n" {
		t.Fatalf("runc in the converted image: %q", out)
	}
}
