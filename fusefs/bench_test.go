package fusefs

// Measurements, not tests: run with
//
//	go test -run '^$' -bench . -benchtime 1x ./fusefs/
//
// Each benchmark reports the mount's time as a ratio of a baseline measured
// in the same run: direct reads of the same file, or the kernel's own
// overlayfs over the same layer directories.

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

func readAll(path string, buf []byte) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	for {
		n, err := f.Read(buf)
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func timeIt(b *testing.B, f func() error) time.Duration {
	b.Helper()
	start := time.Now()
	if err := f(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkSeqRead1GiB reads a 1 GiB blob through the mount and directly,
// both from a warm page cache.
func BenchmarkSeqRead1GiB(b *testing.B) {
	src := newFakeSource(b)
	d := digest.FromString("bench 1 GiB blob") // the fake source does not verify content
	path := filepath.Join(src.dir, d.Encoded())
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	chunk := randomBytes(4<<20, 5)
	const size = 1 << 30
	for off := 0; off < size; off += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	src.mu.Lock()
	src.blobs[d] = size
	src.mu.Unlock()
	m := mount(b, src)
	through := m.p("blobs/sha256/" + d.Encoded())

	buf := make([]byte, 1<<20)
	for _, p := range []string{path, through} { // warm both caches
		if n, err := readAll(p, buf); err != nil || n != size {
			b.Fatalf("warm-up read of %s: %d bytes, %v", p, n, err)
		}
	}
	var direct, mounted time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		direct += timeIt(b, func() error { _, err := readAll(path, buf); return err })
		mounted += timeIt(b, func() error { _, err := readAll(through, buf); return err })
	}
	active, _ := m.fs.Passthrough()
	b.ReportMetric(float64(direct)/float64(mounted), "speed-vs-direct")
	b.ReportMetric(float64(size*b.N)/mounted.Seconds()/(1<<20), "MiB/s-mount")
	b.ReportMetric(float64(size*b.N)/direct.Seconds()/(1<<20), "MiB/s-direct")
	b.Logf("passthrough active: %v", active)
}

// benchLayers writes three layers holding about n files in total.
func benchLayers(b *testing.B, n int) []string {
	base := b.TempDir()
	var dirs []string
	for li := 0; li < 3; li++ {
		l := newLayer(b, base, fmt.Sprintf("l%d", li))
		dirs = append(dirs, l.dir)
		for i := 0; i < n/3; i++ {
			j := li*n/3 + i
			if li > 0 && i%20 == 0 {
				j = i // an override of a lower file
			}
			name := fmt.Sprintf("usr/share/d%03d/f%05d", j/50, j)
			l.file(name, []byte(name), 0o644)
		}
		l.file("bin/ping", []byte("ping"), 0o755)
		l.do(unix.Lsetxattr(l.p("bin/ping"), "security.capability", capV2, 0))
	}
	return dirs
}

func timeCmd(b *testing.B, name string, args ...string) time.Duration {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout = io.Discard
	var errb strings.Builder
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %v: %v %s", name, args, err, errb.String())
	}
	return time.Since(start)
}

// BenchmarkRootfsWalk walks a rootfs of about 5000 files with find and
// ls -lR, cold (first walk after mounting) and warm, through the mount and
// through the kernel's overlayfs over the same layers.
func BenchmarkRootfsWalk(b *testing.B) {
	requireCmd(b, "find")
	layers := benchLayers(b, 5000)
	lower := make([]string, len(layers))
	for i, l := range layers {
		lower[len(layers)-1-i] = l
	}
	type result struct{ findCold, findWarm, lsCold, lsWarm time.Duration }
	var fuseR, ovlR result
	var xattrPerFile float64
	var files int
	for i := 0; i < b.N; i++ {
		src := newFakeSource(b)
		src.layers["r"] = layers
		src.images = append(src.images, ImageInfo{Name: "bench/x:1", RootfsID: "r"})
		m := mount(b, src)
		root := m.p("rootfs/r")
		if _, err := os.Stat(root); err != nil { // builds the tree outside the timing
			b.Fatal(err)
		}
		fuseR.findCold += timeCmd(b, "find", root)
		fuseR.findWarm += timeCmd(b, "find", root)
		before := m.fs.xattrCalls.Load()
		fuseR.lsCold += timeCmd(b, "ls", "-lR", root)
		calls := m.fs.xattrCalls.Load() - before
		fuseR.lsWarm += timeCmd(b, "ls", "-lR", root)
		rt, _ := m.fs.tree(b.Context(), "r")
		files = rt.t.Len()
		xattrPerFile = float64(calls) / float64(files)

		ovl := b.TempDir()
		if err := unix.Mount("overlay", ovl, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lower, ":")); err != nil {
			require(b, "mount overlay", err)
		}
		ovlR.findCold += timeCmd(b, "find", ovl)
		ovlR.findWarm += timeCmd(b, "find", ovl)
		ovlR.lsCold += timeCmd(b, "ls", "-lR", ovl)
		ovlR.lsWarm += timeCmd(b, "ls", "-lR", ovl)
		if err := unix.Unmount(ovl, 0); err != nil {
			b.Fatal(err)
		}
	}
	r := func(a, o time.Duration) float64 { return float64(a) / float64(o) }
	b.ReportMetric(r(fuseR.findCold, ovlR.findCold), "find-cold-x")
	b.ReportMetric(r(fuseR.findWarm, ovlR.findWarm), "find-warm-x")
	b.ReportMetric(r(fuseR.lsCold, ovlR.lsCold), "ls-lR-cold-x")
	b.ReportMetric(r(fuseR.lsWarm, ovlR.lsWarm), "ls-lR-warm-x")
	b.ReportMetric(xattrPerFile, "xattr-reqs/file")
	b.Logf("%d files; fuse find %v/%v ls -lR %v/%v; overlay find %v/%v ls -lR %v/%v (cold/warm)", files,
		fuseR.findCold, fuseR.findWarm, fuseR.lsCold, fuseR.lsWarm, ovlR.findCold, ovlR.findWarm, ovlR.lsCold, ovlR.lsWarm)
}

// BenchmarkWarmWalkOpendir walks a rootfs of about 5000 files (find, ls -lR,
// du -s) warm through two mounts of it, one that answers OPENDIR and
// RELEASEDIR (what the kernel asks per directory of a cached tree) and one
// that lets the kernel skip them, alternating. Wall time on a loaded
// machine is noise; the CPU the daemon and the walkers spend is not.
func BenchmarkWarmWalkOpendir(b *testing.B) {
	requireCmd(b, "find")
	layers := benchLayers(b, 5000)
	src := newFakeSource(b)
	src.layers["r"] = layers
	src.images = append(src.images, ImageInfo{Name: "bench/x:1", RootfsID: "r"})
	with := mountWith(b, src, func(f *FS) { f.withOpendir = true })
	without := mount(b, src)
	const walk = "find %[1]s >/dev/null; ls -lR %[1]s >/dev/null; du -s %[1]s >/dev/null"
	type sums struct{ wall, walker, daemon time.Duration }
	var res [2]sums
	roots := [2]string{with.p("rootfs/r"), without.p("rootfs/r")}
	for _, r := range roots { // build and cache outside the timing
		timeCmd(b, "sh", "-c", fmt.Sprintf(walk, r))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range roots {
			k := (i + j) % 2
			d0 := cpuTime(unix.RUSAGE_SELF)
			w0 := cpuTime(unix.RUSAGE_CHILDREN)
			res[k].wall += timeCmd(b, "sh", "-c", fmt.Sprintf(walk, roots[k]))
			res[k].walker += cpuTime(unix.RUSAGE_CHILDREN) - w0
			res[k].daemon += cpuTime(unix.RUSAGE_SELF) - d0
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(per(res[0].daemon), "daemon-ms-opendir")
	b.ReportMetric(per(res[1].daemon), "daemon-ms-no-opendir")
	b.ReportMetric(per(res[0].walker), "walker-ms-opendir")
	b.ReportMetric(per(res[1].walker), "walker-ms-no-opendir")
	b.ReportMetric(float64(res[0].wall)/float64(res[1].wall), "wall-opendir/no-opendir")
	b.Logf("opendir requests: %d with, %d without; wall %v with, %v without", with.fs.dirOpens.Load(), without.fs.dirOpens.Load(), res[0].wall/time.Duration(b.N), res[1].wall/time.Duration(b.N))
}

// cpuTime is the user and system CPU time of who (RUSAGE_SELF, the daemon
// in these benchmarks, or RUSAGE_CHILDREN, the walks that ended).
func cpuTime(who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
