package index

import (
	"bufio"
	"strings"
	"testing"
)

func TestLockHolderIn(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  WRITE 11 00:2a:77 0 EOF
2: FLOCK  ADVISORY  WRITE 22 00:2b:77 0 EOF
3: -> FLOCK  ADVISORY  WRITE 33 fd:01:77 0 EOF
4: FLOCK  ADVISORY  WRITE 44 fd:01:77 0 EOF
5: FLOCK  ADVISORY  WRITE 55 fd:01:770 0 EOF
`
	for _, tc := range []struct {
		major, minor uint32
		ino          uint64
		want         int
	}{
		{0xfd, 1, 77, 44},  // the holder, not the waiter before it
		{0, 0x2b, 77, 22},  // another device
		{0, 0x2a, 77, 0},   // a POSIX lock is not the database's flock
		{0xfd, 1, 7, 0},    // no prefix match on the inode
		{0xfd, 1, 770, 55}, // the whole field
	} {
		got := lockHolderIn(bufio.NewScanner(strings.NewReader(locks)), tc.major, tc.minor, tc.ino)
		if got != tc.want {
			t.Errorf("holder of %02x:%02x:%d = %d, want %d", tc.major, tc.minor, tc.ino, got, tc.want)
		}
	}
}
