package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/testenv"
)

// debugMemory is the part of the daemon's GET /debug/memory the tests read.
type debugMemory struct {
	Trees      int    `json:"trees"`
	TreeNodes  int    `json:"tree_nodes"`
	KernelRefs int64  `json:"kernel_refs"`
	TreeBuilds int64  `json:"tree_builds"`
	BlobNodes  int    `json:"blob_nodes"`
	HeapAlloc  uint64 `json:"heap_alloc"`
	RSS        int64  `json:"rss"`
}

func getDebugMemory(t *testing.T, root string) debugMemory {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(root, "casfs.sock"))
		},
	}}
	resp, err := c.Get("http://casfs/debug/memory")
	if err != nil {
		t.Fatalf("GET /debug/memory: %v", err)
	}
	defer resp.Body.Close()
	var m debugMemory
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /debug/memory: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("GET /debug/memory: %v", err)
	}
	return m
}

// walkMount records every path below dir with its inode number, mode and
// (for files) content, or (for symlinks) target.
func walkMount(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		v := fmt.Sprintf("ino=%d mode=%o uid=%d size=%d", st.Ino, st.Mode, st.Uid, st.Size)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " data=" + string(b[:min(len(b), 64)])
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			v += " target=" + target
		}
		out[strings.TrimPrefix(p, dir)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMountDropsForgottenTrees: a walked rootfs is held by the daemon while
// the kernel holds its nodes; after drop_caches the daemon drops it, and a
// second walk builds it again with the same tree and inode numbers.
func TestMountDropsForgottenTrees(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ref := pushTestImage(t, reg, "lab/forget", "1", busyboxImage(t))
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "-q", ref)
	testenv.KernelCacheLock(t) // counts what the kernel holds
	mnt := mountCASFS(t, c)

	if m := getDebugMemory(t, c.Root); m.Trees != 0 || m.TreeBuilds != 0 {
		t.Fatalf("before any walk: %+v, want no tree built", m)
	}
	rootfs, err := filepath.EvalSymlinks(filepath.Join(mnt, "images", reg.Host, "lab", "forget", "1", "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	first := walkMount(t, rootfs)
	if !strings.Contains(first["/etc/motd"], "data=hello from casfs") || first["/etc/gone"] != "" {
		t.Fatalf("rootfs through the mount: motd %q gone %q", first["/etc/motd"], first["/etc/gone"])
	}
	held := getDebugMemory(t, c.Root)
	if held.Trees != 1 || held.TreeNodes != len(first) || held.KernelRefs < int64(len(first)) || held.RSS <= 0 {
		t.Fatalf("after a walk of %d entries: %+v, want 1 tree of that many nodes, as many kernel references, an RSS", len(first), held)
	}

	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
	waitDebugMemory(t, c.Root, "the daemon to drop the tree after drop_caches", func(m debugMemory) bool { return m.Trees == 0 })

	second := walkMount(t, rootfs)
	for p, v := range first {
		if second[p] != v {
			t.Errorf("%s: %q before drop_caches, %q after", p, v, second[p])
		}
	}
	if len(second) != len(first) {
		t.Errorf("%d entries after drop_caches, %d before", len(second), len(first))
	}
	if m := getDebugMemory(t, c.Root); m.TreeBuilds != 2 {
		t.Errorf("tree builds after two walks with a forget between: %d, want 2", m.TreeBuilds)
	}
}

// waitDebugMemory polls the daemon's /debug/memory until ok, bounded.
func waitDebugMemory(t *testing.T, root, what string, ok func(debugMemory) bool) debugMemory {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := getDebugMemory(t, root)
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s waiting for %s; the daemon holds: %+v", what, m)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded above
	}
}

// TestMountStartWith100ImagesBuildsNoTree: a daemon started on a store with
// 100 image records builds no tree, neither at start nor for listings of
// images/ and the names in rootfs/; opening one rootfs builds that one. Listing blobs/
// holds one small record per blob, dropped when the kernel forgets them.
func TestMountStartWith100ImagesBuildsNoTree(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ref := pushTestImage(t, reg, "lab/many", "0", busyboxImage(t))
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "-q", ref)
	tags := []string{"image", "tag", ref}
	for i := 1; i < 100; i++ {
		tags = append(tags, fmt.Sprintf("%s/lab/many:%d", reg.Host, i))
	}
	c.OK(nil, tags...)
	if got := len(strings.Fields(c.OK(nil, "image", "ls", "-q"))); got != 100 {
		t.Fatalf("image ls -q: %d images, want 100", got)
	}
	testenv.KernelCacheLock(t) // counts what the kernel holds
	mnt := mountCASFS(t, c)

	if m := getDebugMemory(t, c.Root); m.TreeBuilds != 0 || m.Trees != 0 {
		t.Fatalf("after the daemon started: %+v, want no tree built", m)
	}
	// ls -l of rootfs/ would look each id up, which builds its tree.
	for _, args := range [][]string{{"-lR", filepath.Join(mnt, "images")}, {filepath.Join(mnt, "rootfs")}} {
		if out, err := exec.Command("ls", args...).CombinedOutput(); err != nil {
			t.Fatalf("ls %v: %v\n%s", args, err, out)
		}
	}
	tags99, err := os.Readlink(filepath.Join(mnt, "images", reg.Host, "lab", "many", "99", "rootfs"))
	if err != nil || !strings.Contains(tags99, "rootfs/") {
		t.Fatalf("images/.../many/99/rootfs -> %q, %v", tags99, err)
	}
	if m := getDebugMemory(t, c.Root); m.TreeBuilds != 0 || m.Trees != 0 {
		t.Fatalf("after ls -lR images/ and ls rootfs/: %+v, want no tree built", m)
	}
	if _, err := os.Stat(filepath.Join(mnt, "images", reg.Host, "lab", "many", "42", "rootfs", "etc", "motd")); err != nil {
		t.Fatal(err)
	}
	if m := getDebugMemory(t, c.Root); m.TreeBuilds != 1 || m.Trees != 1 {
		t.Errorf("after opening one rootfs: %+v, want 1 tree built and held", m)
	}

	blobs := strings.Fields(c.OK(nil, "content", "ls", "-q"))
	out, err := exec.Command("ls", "-l", filepath.Join(mnt, "blobs", "sha256")).CombinedOutput()
	if err != nil {
		t.Fatalf("ls -l blobs/sha256: %v\n%s", err, out)
	}
	if m := getDebugMemory(t, c.Root); m.BlobNodes != len(blobs) {
		t.Errorf("after ls -l blobs/sha256 of %d blobs: %d blob nodes held, want as many", len(blobs), m.BlobNodes)
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
	waitDebugMemory(t, c.Root, "the kernel to forget the blobs and the tree", func(m debugMemory) bool {
		return m.BlobNodes == 0 && m.Trees == 0
	})
}
