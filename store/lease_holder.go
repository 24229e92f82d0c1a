package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

// labelLeaseHolder names the process that holds an operation's lease, as
// "<pid>/<start time>" (the start time, in clock ticks since boot, tells a
// reused pid from the holder). A lease whose holder is gone was left by an
// operation that was killed: check notes it and check --repair removes it.
const labelLeaseHolder = "casfs.lease/holder"

// thisProcess is this process's holder label value ("" when /proc cannot
// tell, and then leases carry no holder).
var thisProcess = func() string {
	start, err := procStartTicks(os.Getpid())
	if err != nil {
		return ""
	}
	return strconv.Itoa(os.Getpid()) + "/" + start
}()

// procStartTicks reads field 22 (starttime) of /proc/<pid>/stat.
func procStartTicks(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// fields after its closing parenthesis, which is field 3's start.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return f[19], nil
}

// holderGone reports whether the process a holder label names has ended.
func holderGone(label string) (pid int, gone bool) {
	p, start, ok := strings.Cut(label, "/")
	pid, err := strconv.Atoi(p)
	if !ok || err != nil || pid <= 0 {
		return 0, false // not ours to judge
	}
	now, err := procStartTicks(pid)
	return pid, errors.Is(err, os.ErrNotExist) || (err == nil && now != start)
}

// leases reports operation leases whose holder process is gone; --repair
// removes them, which makes what they held collectable again.
func (c *checker) leases(ctx context.Context) error {
	var stale []index.Lease
	err := c.db.Leases().List(ctx, "", func(_ string, l index.Lease) error {
		if _, gone := holderGone(l.Labels[labelLeaseHolder]); gone {
			stale = append(stale, l)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check: list leases: %w", err)
	}
	for _, l := range stale {
		pid, _ := holderGone(l.Labels[labelLeaseHolder])
		what := fmt.Sprintf("held for %q by process %d, which is gone", l.Labels[labelLeaseOperation], pid)
		if !c.opts.Repair {
			// A kill leaves such a lease by design and nothing is
			// inconsistent: it only keeps what it holds from collection.
			c.note("lease", l.ID, "%s (check --repair removes it)", what)
			continue
		}
		if err := c.db.Leases().Delete(ctx, l.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			c.problem("lease", l.ID, "%s; cannot remove it: %v", what, err)
			continue
		}
		c.repaired("lease", l.ID, "removed: %s", what)
	}
	return nil
}
