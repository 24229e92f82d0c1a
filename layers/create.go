package layers

import (
	"archive/tar"
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A file made by open(O_CREAT) already has its owner (the process's
// effective uid, and its gid or the directory's when that is setgid) and
// its mode (the one asked for, less the umask). Most image files are
// root's with ordinary modes, so for them the chown and chmod that follow
// a create change nothing: created with the final mode, and with the
// owner left alone when it is already the one asked for, a file costs two
// syscalls fewer.

// processUmask is the umask, read from /proc (reading it with umask(2)
// would change it for an instant for every goroutine); ok false when it
// cannot be known. Apply reads it once per layer.
func processUmask() (uint32, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return uint32(m), err == nil
		}
	}
	return 0, false
}

var (
	euid = os.Geteuid()
	egid = os.Getegid()
)

// createMode is the mode to create hdr's regular file with, and whether
// the create alone gives it its final mode (no chmod needed) under umask.
// Setuid, setgid and sticky bits always take a chmod after the chown
// (which clears them).
func createMode(hdr *tar.Header, umask uint32) (uint32, bool) {
	perm := uint32(hdr.Mode) & 0o7777
	if perm&^0o777 != 0 || perm&umask != 0 {
		return 0o600, false
	}
	return perm, true
}

// createdOwned says whether a file created in directory pfd is owned as
// hdr asks without a chown. dir caches pfd's stat for the files that
// follow in it (nil: not looked at yet).
func createdOwned(pfd int, hdr *tar.Header, dir **unix.Stat_t) bool {
	if hdr.Uid != euid {
		return false
	}
	if *dir == nil {
		var st unix.Stat_t
		if unix.Fstat(pfd, &st) != nil {
			return false
		}
		*dir = &st
	}
	gid := egid
	if (*dir).Mode&unix.S_ISGID != 0 {
		gid = int((*dir).Gid)
	}
	return hdr.Gid == gid
}

// aclDefaultXattr holds a directory's default ACL, which masks the mode of
// files created in it instead of the umask.
const aclDefaultXattr = "system.posix_acl_default"

func hasDefaultACL(dir string) bool {
	_, err := unix.Lgetxattr(dir, aclDefaultXattr, nil)
	return err == nil || (err != unix.ENODATA && err != unix.ENOTSUP)
}
