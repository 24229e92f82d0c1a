package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// coldRuns is how many times each cold pull case runs: the 1 GiB case
// runs fewer times to keep `make bench` short. The others run five times:
// a round takes 5-15 s, and on this machine's disk the best of three of
// one side still moved by 10-25% between invocations.
func (e *env) coldRuns(large bool) int {
	if large {
		return 2
	}
	return 5
}

// benchPull: cold pull with unpack by casfs and by containerd (overlayfs
// snapshotter), each command handing the pull to its daemon started before
// the timed run (casfs also without one), on a quiet disk and while a
// background writer streams 2 GiB to the same filesystem (both sides under
// the same writer), wall time and CPU seconds (each side's daemon's and
// command's), and the large image
// against the machine's limit (measureLimit); then walks over each
// side's mounted rootfs of the realistic image.
func benchPull(e *env) ([]Row, error) {
	set, err := e.loadImages()
	if err != nil {
		return nil, err
	}
	// Each cold run's tree is kept aside until every case has run.
	defer e.emptyDiscarded()
	var rows []Row
	for _, c := range []struct {
		name, repo string
		large      bool
		busy       bool
		goal       string
	}{
		{"realistic", refRealistic, false, false, "<= 0.4x"},
		{"realistic, busy disk", refRealistic, false, true, "<= 0.4x"},
		{"20 layers x 100 files", refSmall, false, false, "<= 0.4x"},
		{"large", refLarge, true, false, "<= 0.3x"},
	} {
		ref := set.reg.ref(c.repo, "latest")
		var ours, embedded, theirs []measured
		root := filepath.Join(e.work, "pull-casfs")
		// casfs as ctr runs: a command handing the pull to a daemon started
		// before the timed run (the mount daemon, as on a node), its CPU
		// counted with the command's.
		viaDaemon := func() (measured, error) {
			mnt, err := startCasfsMount(e, root, filepath.Join(e.work, "pull-casfs-mnt"))
			if err != nil {
				return measured{}, err
			}
			dropCaches()
			stop := e.busyWriter(c.busy)
			before := procCPU(mnt.pid)
			m, err := runTimed(10*time.Minute, e.casfs, "--root", root, "image", "pull", "--plain-http", "-q", ref)
			m.cpu += procCPU(mnt.pid) - before
			m.writerCPU = stop()
			mnt.stop()
			e.discard(root)
			return m, err
		}
		// The same command with no daemon: it opens the store itself.
		alone := func() (measured, error) {
			dropCaches()
			stop := e.busyWriter(c.busy)
			m, err := runTimed(10*time.Minute, e.casfs, "--root", root, "image", "pull", "--plain-http", "-q", ref)
			m.writerCPU = stop()
			e.discard(root)
			return m, err
		}
		for i := 0; i < e.coldRuns(c.large); i++ {
			// The two casfs runs swap places each round: the run after
			// another's removal of a GiB or two pays for some of it.
			if err := runRound([]side{{viaDaemon, &ours}, {alone, &embedded}}, i); err != nil {
				return nil, err
			}

			cd, err := startContainerd(e.work)
			if err != nil {
				return nil, err
			}
			cd.remove = e.discard
			dropCaches()
			stop := e.busyWriter(c.busy)
			before := cd.cpu()
			m, err := cd.run(10*time.Minute, "image", "pull", "--plain-http", ref)
			m.cpu += cd.cpu() - before
			m.writerCPU = stop()
			cd.stop()
			if err != nil {
				return nil, err
			}
			theirs = append(theirs, m)
			run := func(m measured) string {
				s := fmt.Sprintf("%s (cpu %s", secs(m.wall), secs(m.cpu))
				if c.busy {
					s += ", the writer's " + secs(m.writerCPU)
				}
				return s + ")"
			}
			logf("pull %s run %d: casfs %s, embedded %s, ctr %s", c.name, i+1, run(ours[i]), run(embedded[i]), run(m))
		}
		o, t, em := best(ours), best(theirs), best(embedded)
		rows = append(rows, Row{
			Name:     fmt.Sprintf("pull+unpack %s (cold, best of %d)", c.name, len(ours)),
			Ours:     secs(o.wall),
			Baseline: secs(t.wall) + " ctr",
			Ratio:    ratio(o.wall, t.wall),
			Goal:     c.goal,
		}, Row{
			Name:     fmt.Sprintf("pull+unpack %s, no daemon (cold, best of %d)", c.name, len(embedded)),
			Ours:     secs(em.wall),
			Baseline: secs(t.wall) + " ctr",
			Ratio:    ratio(em.wall, t.wall),
			Goal:     "-",
		}, Row{
			Name:     fmt.Sprintf("pull+unpack %s: CPU user+sys (least of %d)", c.name, len(ours)),
			Ours:     secs(o.cpu),
			Baseline: secs(t.cpu) + " containerd+ctr",
			Ratio:    ratio(o.cpu, t.cpu),
			Goal:     "<= 1x",
		})
		if c.busy {
			// A CPU-bound pull shares the cores with the writer: this is
			// how much of them the writer took meanwhile, at each side's
			// best run.
			rows = append(rows, Row{
				Name:     fmt.Sprintf("pull+unpack %s: the writer's CPU meanwhile (at the best run)", c.name),
				Ours:     secs(o.writerCPU),
				Baseline: secs(t.writerCPU) + " during ctr's",
				Ratio:    "-",
				Goal:     "-",
			})
		}
		if c.large {
			l, err := e.measureLimit(set, c.repo, set.imageBy(c.repo), true, len(ours))
			if err != nil {
				return nil, err
			}
			rows = append(rows, limitRow(fmt.Sprintf("pull+unpack large vs the machine's limit (cold, best of %d)", len(ours)), o.wall, l, ">= 0.8x"))
		}
	}
	walk, err := benchImageMountWalk(e, set)
	if err != nil {
		return nil, err
	}
	return append(rows, walk...), nil
}

// busyWriter, when on, streams 2 GiB of zeros to a file in the bench's
// work space (the filesystem both sides store into) until the returned
// stop is called; stop removes the file and returns the CPU time the
// writer used.
func (e *env) busyWriter(on bool) (stop func() time.Duration) {
	if !on {
		return func() time.Duration { return 0 }
	}
	path := filepath.Join(e.work, "busy-writer")
	cmd := exec.Command("dd", "if=/dev/zero", "of="+path, "bs=1M", "count=2048")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf("busy writer: %v", err)
		return func() time.Duration { return 0 }
	}
	return func() time.Duration {
		cmd.Process.Kill()
		cmd.Wait()
		os.Remove(path)
		return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
}

// walks are the metadata- and data-heavy passes over a rootfs.
var walks = []struct{ name, script string }{
	{"find", "find %s >/dev/null"},
	// tar to a pipe: GNU tar skips reading file data when writing to /dev/null.
	{"tar cf -", "tar -C %s -cf - . | cat >/dev/null"},
	{"ls -lR", "ls -lR %s >/dev/null"},
}

// timeWalk runs a walk once to warm the caches and returns the best of 3.
func timeWalk(script, dir string) (time.Duration, error) {
	cmd := fmt.Sprintf(script, dir)
	var ms []measured
	for i := 0; i < 4; i++ {
		m, err := shell(5*time.Minute, cmd)
		if err != nil {
			return 0, err
		}
		if i > 0 {
			ms = append(ms, m)
		}
	}
	return best(ms).wall, nil
}

// benchImageMountWalk compares `casfs image mount` with `ctr image mount`:
// both are kernel overlay mounts of the same layers, so the ratio should be
// about 1.
func benchImageMountWalk(e *env, set *images) ([]Row, error) {
	ref := set.reg.ref(refRealistic, "latest")
	root := filepath.Join(e.work, "mount-casfs")
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
	theirDir := filepath.Join(e.work, "mnt-ctr")
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

	ourDir := filepath.Join(e.work, "mnt-casfs")
	os.MkdirAll(ourDir, 0o755)
	_, mountErr := runTimed(time.Minute, e.casfs, "--root", root, "image", "mount", ref, ourDir)
	if mountErr == nil {
		unmountOurs := func() {
			if _, err := runTimed(time.Minute, e.casfs, "--root", root, "image", "unmount", ourDir); err != nil {
				unix.Unmount(ourDir, unix.MNT_DETACH)
			}
		}
		atExit(unmountOurs)
		defer unmountOurs()
	} else {
		logf("casfs image mount: %v", mountErr)
	}
	var rows []Row
	for _, w := range walks[:2] {
		t, err := timeWalk(w.script, theirDir)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s over image mount, realistic (warm, best of 3)", w.name)
		if mountErr != nil {
			rows = append(rows, Row{Name: name, Ours: "n/a: image mount missing", Baseline: secs(t) + " ctr", Ratio: "-", Goal: "~1x"})
			continue
		}
		o, err := timeWalk(w.script, ourDir)
		if err != nil {
			return nil, err
		}
		rows = append(rows, Row{Name: name, Ours: secs(o), Baseline: secs(t) + " ctr", Ratio: ratio(o, t), Goal: "~1x"})
	}
	return rows, nil
}
