package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// limit is what a cold pull or fetch of an image cannot beat on this
// machine: each stage it must go through, measured alone in the same run.
// A pipeline that overlaps the stages perfectly takes as long as the
// slowest of them (slowest) — if the machine has a core for each. On a
// small machine the stages share the cores (the registry serving the
// bytes included), so the CPU time they need, spread over every core, is
// a second bound (shared).
type limit struct {
	network time.Duration // every layer blob read from the registry (in parallel, cold)
	hash    time.Duration // sha256 of every layer blob, one after another
	// diffHash is sha256 of every layer's uncompressed stream, one after
	// another (unpack only): the diff ID a pull must check, as containerd
	// does, before it keys a snapshot by the chain ID. It is a second pass
	// over other bytes, which can run on another core than hash.
	diffHash time.Duration
	gunzip   time.Duration // decompression of every layer blob, one after another (unpack only)
	write    time.Duration // the blobs written and synced, and (unpack only) their files written by tar and synced
	// disk is the network and write stages run at once. The bench's
	// registry keeps its blobs on the same disk the store writes to, so
	// a cold pull reads that disk while it writes: read alone at 0.73 s
	// and written alone at 0.95 s, a GiB took 2.25 s both at once here.
	disk time.Duration

	// CPU time (user+system) of each stage: the registry's and the
	// reader's for network, this process's (and tar's) for the others.
	// Kernel writeback threads are not counted; the write stage's reading
	// of its input from the page cache is, though a pipeline has its bytes
	// in memory already (a little under 0.1 s per GiB here).
	networkCPU, hashCPU, diffHashCPU, gunzipCPU, writeCPU time.Duration
}

func (l limit) slowest() time.Duration {
	return max(l.network, l.hash, l.diffHash, l.gunzip, l.write, l.disk)
}

// cpu is the CPU time all stages need together.
func (l limit) cpu() time.Duration {
	return l.networkCPU + l.hashCPU + l.diffHashCPU + l.gunzipCPU + l.writeCPU
}

// shared is the limit once the stages share this machine's cores: no
// pipeline finishes before the slowest stage alone, nor before every
// core has done its share of the stages' CPU time.
func (l limit) shared() time.Duration {
	return max(l.slowest(), l.cpu()/time.Duration(runtime.NumCPU()))
}

func (l limit) String() string {
	s := fmt.Sprintf("network %s, sha256 %s", secs(l.network), secs(l.hash))
	if l.diffHash > 0 {
		s += ", sha256 uncompressed " + secs(l.diffHash)
	}
	if l.gunzip > 0 {
		s += ", gunzip " + secs(l.gunzip)
	}
	return s + ", durable write " + secs(l.write) + ", both on one disk " + secs(l.disk)
}

// limitRow compares the best casfs time with the limit: the ratio is the
// share of the machine's limit casfs reaches (1.00x: at the limit).
func limitRow(name string, ours time.Duration, l limit, goal string) Row {
	return Row{
		Name: name,
		Ours: secs(ours),
		Baseline: fmt.Sprintf("%s limit (%s); the stages need %s CPU: %s on %d cores, %s of that",
			secs(l.slowest()), l, secs(l.cpu()), secs(l.shared()), runtime.NumCPU(), ratio(l.shared(), ours)),
		Ratio: ratio(l.slowest(), ours),
		Goal:  goal,
	}
}

// measureLimit measures each stage of a pull of img from repo, best of
// runs; unpack adds decompression and the unpacked files.
func (e *env) measureLimit(set *images, repo string, img *image, unpack bool, runs int) (limit, error) {
	var best limit
	for i := 0; i < runs; i++ {
		l, err := e.limitOnce(set, repo, img, unpack)
		if err != nil {
			return limit{}, err
		}
		if i == 0 {
			best = l
			continue
		}
		best.network, best.hash = min(best.network, l.network), min(best.hash, l.hash)
		best.gunzip, best.write = min(best.gunzip, l.gunzip), min(best.write, l.write)
		best.diffHash, best.diffHashCPU = min(best.diffHash, l.diffHash), min(best.diffHashCPU, l.diffHashCPU)
		best.disk = min(best.disk, l.disk)
		best.networkCPU, best.hashCPU = min(best.networkCPU, l.networkCPU), min(best.hashCPU, l.hashCPU)
		best.gunzipCPU, best.writeCPU = min(best.gunzipCPU, l.gunzipCPU), min(best.writeCPU, l.writeCPU)
	}
	logf("limit of %s (unpack %v): %s; CPU network %s, sha256 %s, sha256 uncompressed %s, gunzip %s, write %s", repo, unpack, best,
		secs(best.networkCPU), secs(best.hashCPU), secs(best.diffHashCPU), secs(best.gunzipCPU), secs(best.writeCPU))
	return best, nil
}

func (e *env) limitOnce(set *images, repo string, img *image, unpack bool) (limit, error) {
	var l limit
	var err error
	dropCaches()
	cpu0, reg0 := selfCPU(), procCPU(set.reg.cmd.Process.Pid)
	if l.network, err = readBlobs(set.reg, repo, img); err != nil {
		return l, fmt.Errorf("limit: network: %w", err)
	}
	l.networkCPU = selfCPU() - cpu0 + procCPU(set.reg.cmd.Process.Pid) - reg0
	// The bytes a pull hashes come from the network, in memory: the hash
	// stage must not time a cold read of the bench's own copy of the
	// blobs (that made it swing from 0.84 to 4.15 s per GiB between runs).
	for _, b := range img.layers {
		if err := readFile(b.path); err != nil {
			return l, fmt.Errorf("limit: warm %s: %w", b.path, err)
		}
	}
	start, cpu0 := time.Now(), selfCPU()
	for _, b := range img.layers {
		if err := hashFile(b.path); err != nil {
			return l, fmt.Errorf("limit: sha256: %w", err)
		}
	}
	l.hash, l.hashCPU = time.Since(start), selfCPU()-cpu0
	dir := filepath.Join(e.work, "limit")
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return l, err
	}
	var tars []string
	if unpack {
		start, cpu0 = time.Now(), selfCPU()
		for _, b := range img.layers {
			// Timed to io.Discard; the tar that tar(1) unpacks below is
			// written untimed, so the write stage pays no decompression.
			if err := gunzipFile(b.path, io.Discard); err != nil {
				return l, fmt.Errorf("limit: gunzip: %w", err)
			}
		}
		l.gunzip, l.gunzipCPU = time.Since(start), selfCPU()-cpu0
		for i, b := range img.layers {
			t := filepath.Join(dir, fmt.Sprintf("layer-%d.tar", i))
			if err := gunzipTo(b.path, t); err != nil {
				return l, fmt.Errorf("limit: gunzip: %w", err)
			}
			tars = append(tars, t)
		}
		for _, t := range tars {
			if err := readFile(t); err != nil {
				return l, fmt.Errorf("limit: warm %s: %w", t, err)
			}
		}
		start, cpu0 = time.Now(), selfCPU()
		for _, t := range tars {
			if err := hashFile(t); err != nil {
				return l, fmt.Errorf("limit: sha256 uncompressed: %w", err)
			}
		}
		l.diffHash, l.diffHashCPU = time.Since(start), selfCPU()-cpu0
	}
	syncAll()
	start, cpu0 = time.Now(), selfCPU()+childrenCPU()
	if err := writeStage(dir, img, tars); err != nil {
		return l, err
	}
	l.write, l.writeCPU = time.Since(start), selfCPU()+childrenCPU()-cpu0

	// Both disk stages at once: the registry's copies cold, the write
	// stage's inputs warm, as they are in a pull's memory.
	if err := removeWritten(dir); err != nil {
		return l, err
	}
	dropCaches()
	for _, p := range tars {
		if err := readFile(p); err != nil {
			return l, fmt.Errorf("limit: warm %s: %w", p, err)
		}
	}
	for _, b := range img.layers {
		if err := readFile(b.path); err != nil {
			return l, fmt.Errorf("limit: warm %s: %w", b.path, err)
		}
	}
	start = time.Now()
	netErr := make(chan error, 1)
	go func() {
		_, err := readBlobs(set.reg, repo, img)
		netErr <- err
	}()
	err = writeStage(dir, img, tars)
	if nerr := <-netErr; nerr != nil {
		return l, fmt.Errorf("limit: network with write: %w", nerr)
	}
	if err != nil {
		return l, err
	}
	l.disk = time.Since(start)
	return l, nil
}

// writeStage writes every layer blob to dir and syncs it, then unpacks
// each of tars with tar(1) and syncs the filesystem.
func writeStage(dir string, img *image, tars []string) error {
	for i, b := range img.layers {
		if err := copySynced(b.path, filepath.Join(dir, fmt.Sprintf("blob-%d", i))); err != nil {
			return fmt.Errorf("limit: write: %w", err)
		}
	}
	for i, t := range tars {
		fsDir := filepath.Join(dir, fmt.Sprintf("fs-%d", i))
		if err := os.Mkdir(fsDir, 0o755); err != nil {
			return err
		}
		if out, err := exec.Command("tar", "-C", fsDir, "-xf", t).CombinedOutput(); err != nil {
			return fmt.Errorf("limit: tar -x: %v: %s", err, out)
		}
	}
	syncAll()
	return nil
}

// removeWritten removes what writeStage wrote to dir, keeping the tars.
func removeWritten(dir string) error {
	blobs, _ := filepath.Glob(filepath.Join(dir, "blob-*"))
	trees, _ := filepath.Glob(filepath.Join(dir, "fs-*"))
	for _, p := range append(blobs, trees...) {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	syncAll()
	return nil
}

// selfCPU is the user+system time this process has used; the stages run
// one at a time, so a difference is one stage's.
func selfCPU() time.Duration { return rusageCPU(unix.RUSAGE_SELF) }

// childrenCPU is the user+system time of the children this process reaped.
func childrenCPU() time.Duration { return rusageCPU(unix.RUSAGE_CHILDREN) }

func rusageCPU(who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user+system time of process pid so far (0 if unknown).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after it. utime and stime are fields 14 and 15 of the line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

func syncAll() { unix.Sync() }

// readBlobs reads every layer blob of img from the registry in parallel,
// as a pull does, and discards it.
func readBlobs(reg *registry, repo string, img *image) (time.Duration, error) {
	start := time.Now()
	errs := make([]error, len(img.layers))
	var wg sync.WaitGroup
	for i, b := range img.layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get("http://" + reg.host + "/v2/" + repo + "/blobs/" + b.digest.String())
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil && (resp.StatusCode != http.StatusOK || n != b.size) {
				err = fmt.Errorf("blob %s: %s, %d of %d bytes", b.digest, resp.Status, n, b.size)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func hashFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyBuffer(sha256.New(), f, make([]byte, 1<<20))
	return err
}

func gunzipFile(p string, w io.Writer) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(w, zr, make([]byte, 256<<10))
	return err
}

func gunzipTo(p, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := gunzipFile(p, f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// copySynced writes src's bytes to a new file dst and syncs its data, as
// a blob store commits a blob.
func copySynced(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(out, in, make([]byte, 1<<20)); err != nil {
		out.Close()
		return err
	}
	if err := unix.Fdatasync(int(out.Fd())); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
