package diskspace

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestBudgetLooksAgainOnceItsSlackIsSpent(t *testing.T) {
	d, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fd := int(d.Fd())
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		t.Fatal(err)
	}
	free := available(&st)
	if free < Reserve+2*Slack {
		t.Fatalf("%d bytes free in the temporary directory: the test needs %d", free, Reserve+2*Slack)
	}

	var b Budget
	if err := b.CheckFd(fd, 1<<20); err != nil {
		t.Fatal(err)
	}
	if want := Slack; b.left != want {
		t.Fatalf("left after the first look: %d, want %d", b.left, want)
	}
	// Within the slack: counted, not asked (the answer could not change).
	if err := b.CheckFd(fd, 1<<20); err != nil || b.left != Slack-(1<<20)-fileCost {
		t.Fatalf("second check: left %d, err %v", b.left, err)
	}
	// Past the slack it asks again: more than the disk holds fails in the
	// one error every writer gives, and the next check asks again too.
	err = b.CheckFd(fd, free)
	var de *Error
	if !errors.As(err, &de) || !errors.Is(err, syscall.ENOSPC) || de.Keep != Reserve {
		t.Fatalf("err = %v, want an *Error wrapping ENOSPC", err)
	}
	if b.left != 0 {
		t.Fatalf("left after a refusal: %d, want 0", b.left)
	}
	if err := CheckFd(fd, free); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("CheckFd past the reserve: %v", err)
	}
}
