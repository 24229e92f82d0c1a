package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// limit is what a cold pull or fetch of an image cannot beat on this
// machine: each stage it must go through, measured alone in the same run.
// A pipeline that overlaps the stages perfectly takes as long as the
// slowest of them.
type limit struct {
	network time.Duration // every layer blob read from the registry (in parallel, cold)
	hash    time.Duration // sha256 of every layer blob, one after another
	gunzip  time.Duration // decompression of every layer blob, one after another (unpack only)
	write   time.Duration // the blobs written and synced, and (unpack only) their files written by tar and synced
}

func (l limit) slowest() time.Duration {
	return max(l.network, l.hash, l.gunzip, l.write)
}

func (l limit) String() string {
	s := fmt.Sprintf("network %s, sha256 %s", secs(l.network), secs(l.hash))
	if l.gunzip > 0 {
		s += ", gunzip " + secs(l.gunzip)
	}
	return s + ", durable write " + secs(l.write)
}

// limitRow compares the best casfs time with the limit: the ratio is the
// share of the machine's limit casfs reaches (1.00x: at the limit).
func limitRow(name string, ours time.Duration, l limit, goal string) Row {
	return Row{
		Name:     name,
		Ours:     secs(ours),
		Baseline: fmt.Sprintf("%s limit (%s)", secs(l.slowest()), l),
		Ratio:    ratio(l.slowest(), ours),
		Goal:     goal,
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
	}
	logf("limit of %s (unpack %v): %s", repo, unpack, best)
	return best, nil
}

func (e *env) limitOnce(set *images, repo string, img *image, unpack bool) (limit, error) {
	var l limit
	var err error
	dropCaches()
	if l.network, err = readBlobs(set.reg, repo, img); err != nil {
		return l, fmt.Errorf("limit: network: %w", err)
	}
	start := time.Now()
	for _, b := range img.layers {
		if err := hashFile(b.path); err != nil {
			return l, fmt.Errorf("limit: sha256: %w", err)
		}
	}
	l.hash = time.Since(start)
	dir := filepath.Join(e.work, "limit")
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return l, err
	}
	var tars []string
	if unpack {
		start = time.Now()
		for _, b := range img.layers {
			// Timed to io.Discard; the tar that tar(1) unpacks below is
			// written untimed, so the write stage pays no decompression.
			if err := gunzipFile(b.path, io.Discard); err != nil {
				return l, fmt.Errorf("limit: gunzip: %w", err)
			}
		}
		l.gunzip = time.Since(start)
		for i, b := range img.layers {
			t := filepath.Join(dir, fmt.Sprintf("layer-%d.tar", i))
			if err := gunzipTo(b.path, t); err != nil {
				return l, fmt.Errorf("limit: gunzip: %w", err)
			}
			tars = append(tars, t)
		}
	}
	syncAll()
	start = time.Now()
	for i, b := range img.layers {
		if err := copySynced(b.path, filepath.Join(dir, fmt.Sprintf("blob-%d", i))); err != nil {
			return l, fmt.Errorf("limit: write: %w", err)
		}
	}
	for i, t := range tars {
		fsDir := filepath.Join(dir, fmt.Sprintf("fs-%d", i))
		if err := os.Mkdir(fsDir, 0o755); err != nil {
			return l, err
		}
		if out, err := exec.Command("tar", "-C", fsDir, "-xf", t).CombinedOutput(); err != nil {
			return l, fmt.Errorf("limit: tar -x: %v: %s", err, out)
		}
	}
	syncAll()
	l.write = time.Since(start)
	return l, nil
}

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
