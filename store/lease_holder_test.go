package store

import (
	"os"
	"strconv"
	"testing"
)

func TestHolderGone(t *testing.T) {
	if thisProcess == "" {
		t.Fatal("no holder label for this process")
	}
	if _, gone := holderGone(thisProcess); gone {
		t.Fatalf("this process (%s) counted as gone", thisProcess)
	}
	for _, label := range []string{
		strconv.Itoa(os.Getpid()) + "/1", // same pid, another start: reused
		strconv.Itoa(1<<22+12345) + "/7", // beyond pid_max: no such process
	} {
		if _, gone := holderGone(label); !gone {
			t.Errorf("%s: not counted as gone", label)
		}
	}
	for _, label := range []string{"", "x/1", "12"} {
		if _, gone := holderGone(label); gone {
			t.Errorf("%q: a label that names no process counted as gone", label)
		}
	}
}
