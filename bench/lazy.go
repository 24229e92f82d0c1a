package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// lazyTrials is how many cold runs each side of a first-byte figure gets;
// the best counts. A run takes 0.2-4 s, and the best of three of either
// side moved by 20-40% between invocations on this machine (the eager
// large pull from 2.6 to 4.1 s within the afternoon).
const lazyTrials = 5

// benchLazy: eStargz copies (made with casfs image convert and pushed) of
// the realistic image and of the large one, started lazily through a live
// mount, against eager pulls of the originals through another mount: time
// from the pull command to the first byte of a small file, bytes fetched
// from the registry and stored by then, find over each rootfs, and a cold
// sequential read of the large image's big file against `content fetch`
// of its layer.
func benchLazy(e *env) ([]Row, error) {
	set, err := e.loadImages()
	if err != nil {
		return nil, err
	}
	proxy, err := startCountingProxy(set.reg.host)
	if err != nil {
		return nil, err
	}
	defer proxy.srv.Close()
	var rows []Row
	for _, c := range []struct {
		name, repo, goal string
		img              *image
		large            bool
	}{
		{"realistic", refRealistic, "<= 0.1x", set.realistic, false},
		{"large", refLarge, "<= 0.05x", set.large, true},
	} {
		r, err := benchLazyImage(e, set, proxy, c.name, c.repo, c.goal, c.large)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

func benchLazyImage(e *env, set *images, proxy *countingProxy, name, repo, goal string, large bool) ([]Row, error) {
	ref := set.reg.ref(repo, "latest")
	lref := set.reg.ref(repo, "estargz")
	conv := filepath.Join(e.work, "lazy-convert")
	defer os.RemoveAll(conv)
	for _, args := range [][]string{
		{"image", "pull", "--plain-http", "-q", ref},
		{"image", "convert", "--estargz", "-q", ref, lref},
		{"image", "push", "--plain-http", lref},
	} {
		if _, err := runTimed(20*time.Minute, e.casfs, append([]string{"--root", conv}, args...)...); err != nil {
			return nil, err
		}
	}

	// The sides alternate, eager first: its first run also picks the
	// small file both sides read. The timed lazy runs go to the registry
	// as the eager ones do; one more, untimed, goes through the counting
	// proxy, so that the bytes the registry sent by the first read are
	// known (a proxy in this process adds a hop to every request, and CPU
	// on a 2-core machine).
	var small string
	var eager, lazy firstByte
	defer func() { eager.stop(); lazy.stop() }()
	pref := set.reg.host + "/" + repo + ":estargz"
	for i := 0; i < lazyTrials; i++ {
		run, err := firstByteRun(e, "lazy-eager", set.reg.host, repo, "latest", &small,
			"image", "pull", "--plain-http", "-q", ref)
		if err != nil {
			return nil, err
		}
		eager = eager.keep(run, i == lazyTrials-1)
		if run, err = firstByteRun(e, "lazy", set.reg.host, repo, "estargz", &small,
			"image", "pull", "--plain-http", "--lazy", "--lazy-complete=false", "-q", pref); err != nil {
			return nil, err
		}
		if run.stored, err = diskUsage(filepath.Join(run.m.root, "lazy")); err != nil {
			run.m.stop()
			return nil, err
		}
		lazy = lazy.keep(run, i == lazyTrials-1)
	}
	proxy.bytes.Store(0)
	counted, err := firstByteRun(e, "lazy-counted", proxy.host, repo, "estargz", &small,
		"image", "pull", "--plain-http", "--lazy", "--lazy-complete=false", "-q", proxy.host+"/"+repo+":estargz")
	if err != nil {
		return nil, err
	}
	lazy.fetched = proxy.bytes.Load()
	counted.m.stop()
	os.RemoveAll(counted.m.root)
	total, err := manifestLayerBytes(filepath.Join(lazy.m.dir, "images", set.reg.host, repo, "estargz", "manifest.json"))
	if err != nil {
		return nil, err
	}
	logf("lazy %s: first byte of /%s after %s (eager %s); %d bytes from the registry, %d stored, of %d", name, small,
		secs(lazy.best), secs(eager.best), lazy.fetched, lazy.stored, total)
	pct := func(n int64) string { return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(total)) }
	rows := []Row{
		{Name: fmt.Sprintf("lazy pull -> first byte of a small file (%s, cold, best of %d)", name, lazyTrials), Ours: secs(lazy.best), Baseline: secs(eager.best) + " eager pull", Ratio: ratio(lazy.best, eager.best), Goal: goal},
		{Name: fmt.Sprintf("bytes from the registry by then (%s)", name), Ours: pct(lazy.fetched), Baseline: mib(total) + " eStargz", Ratio: "-", Goal: "-"},
		{Name: fmt.Sprintf("layer bytes stored by then (%s)", name), Ours: pct(lazy.stored), Baseline: mib(total) + " eStargz", Ratio: "-", Goal: "<= 5%"},
	}
	if !large {
		lw, err := timeWalk("find %s >/dev/null", lazy.rootfs)
		if err != nil {
			return nil, err
		}
		ew, err := timeWalk("find %s >/dev/null", eager.rootfs)
		if err != nil {
			return nil, err
		}
		return append(rows, Row{Name: "find over the lazy rootfs (before completion)", Ours: secs(lw), Baseline: secs(ew) + " eager rootfs", Ratio: ratio(lw, ew), Goal: "<= 1.5x"}), nil
	}
	// Each further read of the big file needs a lazy pull into an empty
	// store of its own.
	again := func() (firstByteResult, error) {
		return firstByteRun(e, "lazy-big", set.reg.host, repo, "estargz", &small,
			"image", "pull", "--plain-http", "--lazy", "--lazy-complete=false", "-q", pref)
	}
	row, err := lazyBigRead(e, set, lazy, again)
	if err != nil {
		return nil, err
	}
	return append(rows, row), nil
}

// lazyBigRead reads the large image's big file through a lazy mount,
// cold and end to end, against `content fetch` of the big layer of the
// eStargz copy into an empty store: lazyTrials runs each, alternating, the
// best of each side (the first read goes through the mount the first-byte
// runs left, the others through mounts again makes).
func lazyBigRead(e *env, set *images, lazy firstByte, again func() (firstByteResult, error)) (Row, error) {
	// The layer the big file lives in: the eStargz manifest's largest.
	ms, err := manifestLayers(filepath.Join(lazy.m.dir, "images", set.reg.host, refLarge, "estargz", "manifest.json"))
	if err != nil {
		return Row{}, err
	}
	var layer layerDesc
	for _, l := range ms {
		if l.Size > layer.Size {
			layer = l
		}
	}
	var reads, fetches []time.Duration
	var n int64
	for i := 0; i < lazyTrials; i++ {
		rootfs, done := lazy.rootfs, func() {}
		if i > 0 {
			run, err := again()
			if err != nil {
				return Row{}, err
			}
			rootfs, done = run.rootfs, func() {
				run.m.stop()
				os.RemoveAll(run.m.root)
			}
		}
		dropCaches()
		t, got, err := readAll(filepath.Join(rootfs, "big", "random.bin"))
		done()
		if err != nil {
			return Row{}, err
		}
		reads, n = append(reads, t), got

		root := filepath.Join(e.work, "lazy-fetch-root")
		dropCaches()
		m, err := runTimed(20*time.Minute, e.casfs, "--root", root, "content", "fetch", "--plain-http", set.reg.host+"/"+refLarge+"@"+layer.Digest)
		os.RemoveAll(root)
		if err != nil {
			return Row{}, err
		}
		fetches = append(fetches, m.wall)
		logf("lazy big read run %d: %s through the mount, content fetch %s", i+1, secs(t), secs(m.wall))
	}
	ours := float64(n) / slices.Min(reads).Seconds()
	base := float64(layer.Size) / slices.Min(fetches).Seconds()
	return Row{
		Name:     fmt.Sprintf("cold sequential read of the lazy 1 GiB file (large, best of %d)", lazyTrials),
		Ours:     fmt.Sprintf("%.0f MiB/s", ours/(1<<20)),
		Baseline: fmt.Sprintf("%.0f MiB/s content fetch", base/(1<<20)),
		Ratio:    fmt.Sprintf("%.2fx", ours/base),
		Goal:     ">= 0.5x",
	}, nil
}

// firstByte is the best of several cold runs of one side; the last run's
// mount stays up for the figures that follow.
type firstByte struct {
	best     time.Duration
	fetched  int64
	stored   int64
	m        *casfsMount
	rootfs   string
	haveBest bool
}

type firstByteResult struct {
	wall   time.Duration
	stored int64
	m      *casfsMount
	rootfs string
}

// keep folds one run in: the best time (with the bytes that run stored),
// and the last run's mount; earlier mounts are stopped.
func (f firstByte) keep(r firstByteResult, last bool) firstByte {
	if !f.haveBest || r.wall < f.best {
		f.best, f.stored, f.haveBest = r.wall, r.stored, true
	}
	if last {
		f.m, f.rootfs = r.m, r.rootfs
	} else {
		r.m.stop()
		os.RemoveAll(r.m.root)
	}
	return f
}

func (f firstByte) stop() {
	if f.m != nil {
		f.m.stop()
		os.RemoveAll(f.m.root)
	}
}

// firstByteRun starts a mount over an empty store, drops the caches, runs
// the pull command, and times it up to the first byte of the small file
// (picked, when *small is empty, as the first small file of the rootfs).
func firstByteRun(e *env, name, host, repo, tag string, small *string, pull ...string) (firstByteResult, error) {
	root, mnt := filepath.Join(e.work, name+"-root"), filepath.Join(e.work, name+"-mnt")
	m, err := startCasfsMount(e, root, mnt)
	if err != nil {
		return firstByteResult{}, err
	}
	fail := func(err error) (firstByteResult, error) {
		m.stop()
		os.RemoveAll(root)
		return firstByteResult{}, err
	}
	dropCaches()
	start := time.Now()
	if _, err := runWall(10*time.Minute, e.casfs, append([]string{"--root", root}, pull...)...); err != nil {
		return fail(err)
	}
	rfs, err := rootfsOf(mnt, host, repo, tag)
	if err != nil {
		return fail(err)
	}
	if *small == "" {
		if *small, err = firstSmallFile(rfs); err != nil {
			return fail(err)
		}
	}
	f, err := os.Open(filepath.Join(rfs, *small))
	if err != nil {
		return fail(err)
	}
	_, err = f.Read(make([]byte, 1))
	f.Close()
	if err != nil {
		return fail(err)
	}
	return firstByteResult{wall: time.Since(start), m: m, rootfs: rfs}, nil
}

// firstSmallFile is the first regular file under 4 KiB in walk order,
// relative to root.
func firstSmallFile(root string) (string, error) {
	var found string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found != "" {
			return err
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil && fi.Size() > 0 && fi.Size() < 4096 {
				found = strings.TrimPrefix(p, root+"/")
				return filepath.SkipAll
			}
		}
		return nil
	})
	if err == nil && found == "" {
		err = fmt.Errorf("no small file in %s", root)
	}
	return found, err
}

// diskUsage is the bytes allocated under dir (sparse files count what they hold).
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return err
		}
		n += st.Blocks * 512
		return nil
	})
	return n, err
}

type layerDesc = struct {
	Digest string
	Size   int64
}

func manifestLayers(path string) ([]layerDesc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m struct{ Layers []layerDesc }
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m.Layers, nil
}

func manifestLayerBytes(path string) (int64, error) {
	ls, err := manifestLayers(path)
	var n int64
	for _, l := range ls {
		n += l.Size
	}
	return n, err
}
