package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// benchLazy: an eStargz copy of the realistic image (made with casfs image
// convert and pushed) started lazily through a live mount, against an eager
// pull of the original through another mount: time from the pull command
// to the first byte of a small file, bytes stored by then, and find over
// each rootfs.
func benchLazy(e *env) ([]Row, error) {
	set, err := e.loadImages()
	if err != nil {
		return nil, err
	}
	ref := set.reg.ref(refRealistic, "latest")
	lref := set.reg.ref(refRealistic, "estargz")
	conv := filepath.Join(e.work, "lazy-convert")
	defer os.RemoveAll(conv)
	for _, args := range [][]string{
		{"image", "pull", "--plain-http", "-q", ref},
		{"image", "convert", "--estargz", "-q", ref, lref},
		{"image", "push", "--plain-http", lref},
	} {
		if _, err := runTimed(10*time.Minute, e.casfs, append([]string{"--root", conv}, args...)...); err != nil {
			return nil, err
		}
	}

	// Eager first: it also picks the small file both sides read.
	eroot, emnt := filepath.Join(e.work, "lazy-eager-root"), filepath.Join(e.work, "lazy-eager-mnt")
	em, err := startCasfsMount(e, eroot, emnt)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(eroot)
	defer em.stop()
	dropCaches()
	start := time.Now()
	if _, err := runTimed(10*time.Minute, e.casfs, "--root", eroot, "image", "pull", "--plain-http", "-q", ref); err != nil {
		return nil, err
	}
	erfs, err := rootfsOf(emnt, set.reg.host, refRealistic, "latest")
	if err != nil {
		return nil, err
	}
	small, err := firstSmallFile(erfs)
	if err != nil {
		return nil, err
	}
	if _, err := os.ReadFile(filepath.Join(erfs, small)); err != nil {
		return nil, err
	}
	eagerFirst := time.Since(start)

	lroot, lmnt := filepath.Join(e.work, "lazy-root"), filepath.Join(e.work, "lazy-mnt")
	lm, err := startCasfsMount(e, lroot, lmnt)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(lroot)
	defer lm.stop()
	dropCaches()
	start = time.Now()
	if _, err := runTimed(10*time.Minute, e.casfs, "--root", lroot, "image", "pull", "--plain-http", "--lazy", "--lazy-complete=false", "-q", lref); err != nil {
		return nil, err
	}
	lrfs, err := rootfsOf(lmnt, set.reg.host, refRealistic, "estargz")
	if err != nil {
		return nil, err
	}
	if _, err := os.ReadFile(filepath.Join(lrfs, small)); err != nil {
		return nil, err
	}
	lazyFirst := time.Since(start)
	stored, err := diskUsage(filepath.Join(lroot, "lazy"))
	if err != nil {
		return nil, err
	}
	total := set.realistic.compressed()
	logf("lazy: first byte of /%s after %s (eager %s); %d of %d layer bytes stored", small, secs(lazyFirst), secs(eagerFirst), stored, total)

	rows := []Row{
		{Name: "lazy pull -> first byte of a small file (realistic, cold)", Ours: secs(lazyFirst), Baseline: secs(eagerFirst) + " eager pull", Ratio: ratio(lazyFirst, eagerFirst), Goal: "<= 0.1x"},
		{Name: "layer bytes stored by then (realistic)", Ours: fmt.Sprintf("%.1f%%", 100*float64(stored)/float64(total)), Baseline: mib(total) + " compressed", Ratio: "-", Goal: "<= 5%"},
	}
	lw, err := timeWalk("find %s >/dev/null", lrfs)
	if err != nil {
		return nil, err
	}
	ew, err := timeWalk("find %s >/dev/null", erfs)
	if err != nil {
		return nil, err
	}
	rows = append(rows, Row{Name: "find over the lazy rootfs (before completion)", Ours: secs(lw), Baseline: secs(ew) + " eager rootfs", Ratio: ratio(lw, ew), Goal: "<= 1.5x"})
	return rows, nil
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
