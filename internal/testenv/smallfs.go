package testenv

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// SmallFS mounts a new ext4 filesystem of size bytes (a loop device over a
// sparse file under the test's temporary directory, no blocks reserved for
// root) on a new temporary directory and returns its path; it is unmounted
// when the test ends, also on failure. Tests of a full filesystem use it as
// a store root (root only). ext4 rather than tmpfs: tmpfs allocates a page
// even to read a hole of a shared mapping, which no disk filesystem does.
func SmallFS(t testing.TB, size int64) string {
	t.Helper()
	RequireRoot(t)
	Require(t, "mkfs.ext4", "mount", "umount")
	img := filepath.Join(t.TempDir(), "fs.img")
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(size)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	mkfs, _ := lookPath("mkfs.ext4")
	if out, err := exec.Command(mkfs, "-q", "-F", "-m", "0", "-E", "nodiscard", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	dir, err := os.MkdirTemp("", "casfs-smallfs-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop,nodev,nosuid", img, dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		t.Fatalf("mount %s: %v: %s", img, err, out)
	}
	t.Cleanup(func() {
		// The loop device goes with the last unmount (mount's autoclear).
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmount %s: %v: %s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
		os.Remove(dir)
	})
	return dir
}

// FillFS writes a file named name under dir until the filesystem has at
// most leave bytes free (none left at all when leave is 0), and returns its
// path: removing it frees the space again.
func FillFS(t testing.TB, dir, name string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if free := int64(st.Bfree) * st.Bsize; free > leave {
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Fallocate(int(f.Fd()), 0, fi.Size(), free-leave); err != nil && !isNoSpace(err) {
			t.Fatalf("fill %s: %v", dir, err)
		}
	}
	if leave > 0 {
		return path
	}
	// Take the last blocks too, whatever the filesystem keeps back.
	buf := make([]byte, 1<<20)
	for _, n := range []int{1 << 20, 64 << 10, 4 << 10, 512, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				if !isNoSpace(err) {
					t.Fatalf("fill %s: %v", dir, err)
				}
				break
			}
		}
	}
	return path
}

func isNoSpace(err error) bool { return errors.Is(err, unix.ENOSPC) }
