package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// casfsMount is a `casfs mount` daemon run in the foreground as our child,
// so that its pid (for VmRSS) is known.
type casfsMount struct {
	root, dir string
	stop      func()
	pid       int
}

func startCasfsMount(e *env, root, dir string) (*casfsMount, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	os.MkdirAll(root, 0o755)
	logPath := filepath.Join(e.work, "casfs-mount.log")
	cmd, done, err := startDaemon(logPath, e.casfs, "--root", root, "mount", dir)
	if err != nil {
		return nil, err
	}
	m := &casfsMount{root: root, dir: dir, pid: cmd.Process.Pid}
	m.stop = func() {
		if exited(done) {
			return
		}
		stopGroup(cmd, done, 15*time.Second)
		unix.Unmount(dir, unix.MNT_DETACH) // in case the daemon could not
	}
	atExit(m.stop)
	err = waitFor(30*time.Second, "casfs mount", func() bool {
		return exited(done) || isMountPoint(dir)
	})
	if err == nil && exited(done) {
		err = fmt.Errorf("casfs mount exited: %s", tail(logPath))
	}
	if err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

func isMountPoint(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// vmRSS reads a process's resident set size from /proc.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// readAll reads a file sequentially in 1 MiB chunks and returns the time.
func readAll(path string) (time.Duration, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	start := time.Now()
	n, err := io.CopyBuffer(io.Discard, onlyReader{f}, make([]byte, 1<<20))
	return time.Since(start), n, err
}

// onlyReader hides WriterTo/ReaderFrom so that the copy is plain reads.
type onlyReader struct{ io.Reader }

// benchFUSE: blob reads, rootfs walks and daemon memory of `casfs mount`.
func benchFUSE(e *env) ([]Row, error) {
	set, err := e.loadImages()
	if err != nil {
		return nil, err
	}
	root := filepath.Join(e.work, "fuse-root")
	defer os.RemoveAll(root)
	m, err := startCasfsMount(e, root, filepath.Join(e.work, "mnt-fuse"))
	if err != nil {
		return nil, err
	}
	defer m.stop()
	pull := func(ref string, args ...string) error {
		args = append([]string{"--root", root, "image", "pull", "--plain-http", "-q"}, append(args, ref)...)
		_, err := runTimed(10*time.Minute, e.casfs, args...)
		return err
	}
	var rows []Row

	// 1. Sequential read of the large image's big layer blob.
	if err := pull(set.reg.ref(refLarge, "latest"), "--no-unpack"); err != nil {
		return nil, err
	}
	big := set.large.layers[len(set.large.layers)-1]
	native := filepath.Join(root, "blobs", "sha256", big.digest.Encoded())
	viaFuse := filepath.Join(m.dir, "blobs", "sha256", big.digest.Encoded())
	var bestNative, bestFuse time.Duration
	for i := 0; i < 4; i++ { // the first pass warms the page cache
		tn, n, err := readAll(native)
		if err != nil {
			return nil, err
		}
		tf, nf, err := readAll(viaFuse)
		if err != nil {
			return nil, fmt.Errorf("read through the mount: %w", err)
		}
		if n != big.size || nf != big.size {
			return nil, fmt.Errorf("read %d and %d bytes of a %d-byte blob", n, nf, big.size)
		}
		if i > 0 && (bestNative == 0 || tn < bestNative) {
			bestNative = tn
		}
		if i > 0 && (bestFuse == 0 || tf < bestFuse) {
			bestFuse = tf
		}
	}
	mb := float64(big.size) / (1 << 20)
	rows = append(rows, Row{
		Name:     fmt.Sprintf("mount: sequential read of a %s blob (warm, best of 3)", mib(big.size)),
		Ours:     fmt.Sprintf("%.0f MiB/s", mb/bestFuse.Seconds()),
		Baseline: fmt.Sprintf("%.0f MiB/s native", mb/bestNative.Seconds()),
		Ratio:    fmt.Sprintf("%.2fx", bestNative.Seconds()/bestFuse.Seconds()),
		Goal:     ">= 0.9x",
	})

	// 2. Walks over the realistic rootfs, against containerd's overlay mount.
	ref := set.reg.ref(refRealistic, "latest")
	if err := pull(ref); err != nil {
		return nil, err
	}
	ourRootfs, err := rootfsOf(m.dir, set.reg.host, refRealistic, "latest")
	if err != nil {
		return nil, err
	}
	cd, err := startContainerd(e.work)
	if err != nil {
		return nil, err
	}
	defer cd.stop()
	if _, err := cd.run(10*time.Minute, "image", "pull", "--plain-http", ref); err != nil {
		return nil, err
	}
	theirDir := filepath.Join(e.work, "mnt-ctr-fuse")
	os.MkdirAll(theirDir, 0o755)
	if _, err := cd.run(time.Minute, "image", "mount", ref, theirDir); err != nil {
		return nil, err
	}
	unmountCtr := func() {
		if _, err := cd.run(time.Minute, "image", "unmount", "--rm", theirDir); err != nil {
			unix.Unmount(theirDir, unix.MNT_DETACH)
		}
	}
	atExit(unmountCtr)
	defer unmountCtr()
	for _, w := range []int{0, 2} {
		o, err := timeWalk(walks[w].script, ourRootfs)
		if err != nil {
			return nil, err
		}
		t, err := timeWalk(walks[w].script, theirDir)
		if err != nil {
			return nil, err
		}
		rows = append(rows, Row{
			Name:     fmt.Sprintf("mount: %s over rootfs/, realistic (warm, best of 3)", walks[w].name),
			Ours:     secs(o),
			Baseline: secs(t) + " overlayfs",
			Ratio:    ratio(o, t),
			Goal:     "<= 1.5x",
		})
	}

	// 3. Daemon memory with ten distinct images whose trees were all walked.
	for _, v := range set.variants {
		if err := pull(v); err != nil {
			return nil, err
		}
	}
	for i := range set.variants {
		dir, err := rootfsOf(m.dir, set.reg.host, refVariant, fmt.Sprintf("v%d", i))
		if err != nil {
			return nil, err
		}
		if _, err := shell(5*time.Minute, fmt.Sprintf("find %s >/dev/null", dir)); err != nil {
			return nil, err
		}
	}
	rss, err := vmRSS(m.pid)
	if err != nil {
		return nil, err
	}
	rows = append(rows, Row{
		Name:     fmt.Sprintf("mount: daemon VmRSS, %d rootfs of ~%dk entries walked", len(set.variants)+1, set.realistic.files()/1000),
		Ours:     mib(rss),
		Baseline: "-",
		Ratio:    "-",
		Goal:     "<= 64 MiB",
	})
	return rows, nil
}

// rootfsOf resolves images/<host>/<repo>/<tag>/rootfs in a casfs mount.
func rootfsOf(mnt, host, repo, tag string) (string, error) {
	link := filepath.Join(mnt, "images", host, repo, tag, "rootfs")
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", fmt.Errorf("rootfs of %s/%s:%s in the mount: %w", host, repo, tag, err)
	}
	return dir, nil
}
