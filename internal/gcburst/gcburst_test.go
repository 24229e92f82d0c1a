package gcburst

import (
	"runtime/debug"
	"testing"
)

func TestBurstsNestAndRestore(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	end1 := Begin()
	end2 := Begin()
	if got := debug.SetGCPercent(percent); got != percent {
		t.Fatalf("during two bursts GOGC is %d, want %d", got, percent)
	}
	end1()
	end1() // a second call is a no-op
	if got := debug.SetGCPercent(percent); got != percent {
		t.Fatalf("with one burst left GOGC is %d, want %d", got, percent)
	}
	end2()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("after the bursts GOGC is %d, want 100 back", got)
	}
}

func TestBurstKeepsALaxerSetting(t *testing.T) {
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)
	end := Begin()
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("a burst under GOGC=off set %d", got)
	}
	end()
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("after a burst under GOGC=off GOGC is %d", got)
	}
}
