package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// benchArchives: `casfs image export` and `image import` of the realistic
// image against `ctr image export` and `ctr image import` (exports warm;
// each import into an empty store after a sync and a drop of the caches,
// as the cold pulls; best of 3). Both imports read ctr's archive.
//
// The imports start as the cold pulls do: caches dropped, and no tree
// removed just before (env.discard keeps each import's store aside until
// the group ends). On ext4 without a journal every file created within
// minutes of the removal of another store's 14k files first scans past
// the recently freed inodes (ialloc.c, recently_deleted): measured warm
// right after such a removal, casfs' import spent 57% of its CPU samples
// there and took 3.4 to 6.8 s against 1.5 s cold, and dropping the caches
// alone still left 13% of a realistic pull's CPU samples there.
func benchArchives(e *env) ([]Row, error) {
	set, err := e.loadImages()
	if err != nil {
		return nil, err
	}
	ref := set.reg.ref(refRealistic, "latest")
	root := filepath.Join(e.work, "archive-casfs")
	defer os.RemoveAll(root)
	if _, err := runTimed(10*time.Minute, e.casfs, "--root", root, "image", "pull", "--plain-http", "-q", ref); err != nil {
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
	ctrTar := filepath.Join(e.work, "ctr-export.tar")
	ourTar := filepath.Join(e.work, "casfs-export.tar")
	var ours, theirs []measured
	var ourErr error
	for i := 0; i < 3; i++ {
		os.Remove(ctrTar)
		m, err := cd.run(5*time.Minute, "image", "export", ctrTar, ref)
		if err != nil {
			return nil, err
		}
		theirs = append(theirs, m)
		if ourErr == nil {
			os.Remove(ourTar)
			m, ourErr = runTimed(5*time.Minute, e.casfs, "--root", root, "image", "export", ourTar, ref)
			ours = append(ours, m)
		}
	}
	os.Remove(ourTar)
	rows := []Row{archiveRow("image export realistic (warm, best of 3)", ours, theirs, ourErr)}

	ours, theirs, ourErr = nil, nil, nil
	defer e.emptyDiscarded()
	for i := 0; i < 3; i++ {
		fresh, err := startContainerd(e.work)
		if err != nil {
			return nil, err
		}
		fresh.remove = e.discard
		dropCaches()
		m, err := fresh.run(5*time.Minute, "image", "import", ctrTar)
		fresh.stop()
		if err != nil {
			return nil, err
		}
		theirs = append(theirs, m)
		if ourErr == nil {
			r := filepath.Join(e.work, "import-casfs")
			dropCaches()
			m, ourErr = runTimed(5*time.Minute, e.casfs, "--root", r, "image", "import", ctrTar)
			e.discard(r)
			ours = append(ours, m)
		}
	}
	rows = append(rows, archiveRow("image import realistic, with unpack (cold, best of 3)", ours, theirs, ourErr))
	return rows, nil
}

func archiveRow(name string, ours, theirs []measured, ourErr error) Row {
	t := best(theirs)
	r := Row{Name: name, Baseline: secs(t.wall) + " ctr", Goal: "<= 0.5x"}
	if ourErr != nil {
		logf("%s: %v", name, ourErr)
		r.Ours, r.Ratio = "n/a: "+shortErr(ourErr), "-"
		return r
	}
	o := best(ours)
	r.Ours, r.Ratio = secs(o.wall), ratio(o.wall, t.wall)
	return r
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "casfs: "); i >= 0 {
		s = s[i+len("casfs: "):]
	}
	if len(s) > 80 {
		s = s[len(s)-80:]
	}
	return s
}

// benchGC: `casfs gc` over 100k blobs of which half are held by leases.
func benchGC(e *env) ([]Row, error) {
	n := 100_000
	if e.quick {
		n = 10_000
	}
	root := filepath.Join(e.work, "gc-root")
	defer os.RemoveAll(root)
	if err := seedSmallBlobs(root, n); err != nil {
		return nil, err
	}
	if err := leaseHalf(root, n); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("gc, %dk blobs of which half garbage", n/1000)
	m, err := runTimed(10*time.Minute, e.casfs, "--root", root, "gc")
	if err != nil {
		logf("gc: %v", err)
		return []Row{{Name: name, Ours: "n/a: " + shortErr(err), Baseline: "-", Ratio: "-", Goal: "-"}}, nil
	}
	left, _ := os.ReadDir(filepath.Join(root, "blobs", "sha256"))
	if len(left) != n/2 {
		logf("gc left %d of %d blobs, expected %d", len(left), n, n/2)
	}
	return []Row{{
		Name:     name,
		Ours:     fmt.Sprintf("%s, peak RSS %s, %d blobs left", secs(m.wall), mib(m.maxRSS), len(left)),
		Baseline: "-",
		Ratio:    "-",
		Goal:     fmt.Sprintf("%d left", n/2),
	}}, nil
}
