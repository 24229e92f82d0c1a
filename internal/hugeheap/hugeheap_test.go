package hugeheap

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// TestBurstsMarkTheHeap: Prepare reserves the range of the first burst
// in the background, and the mapping that holds a new heap object has the
// huge page advice ("hg" in smaps' VmFlags) while a burst runs,
// overlapping bursts included, and has it taken back after the last
// ("nh").
func TestBurstsMarkTheHeap(t *testing.T) {
	ReserveAtFirstBurst(64 << 20)
	Prepare()
	Prepare() // one reservation
	reserved := false
	for deadline := time.Now().Add(10 * time.Second); !reserved && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		mu.Lock()
		reserved = hi != 0
		mu.Unlock()
	}
	if !reserved {
		t.Fatal("Prepare reserved nothing")
	}
	end0 := Begin()
	end0()
	b := make([]byte, 8<<20)
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	var end1, end2 func()
	for i, c := range []struct {
		step func()
		flag string
	}{
		{func() { end1 = Begin() }, "hg"},
		{func() { end2 = Begin() }, "hg"},
		{func() { end1() }, "hg"},
		{func() { end1() }, "hg"}, // a second call ends nothing
		{func() { end2() }, "nh"},
	} {
		c.step()
		flags, err := vmFlags(addr)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(" "+flags+" ", " "+c.flag+" ") {
			t.Fatalf("step %d: the heap mapping holding a new object has VmFlags %q, without %s", i, flags, c.flag)
		}
	}
	b[0], b[len(b)-1] = 1, 2 // usable memory
}

// vmFlags is the VmFlags line of the smaps entry holding addr.
func vmFlags(addr uintptr) (string, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		l := sc.Text()
		var lo, hi uintptr
		if _, err := fmt.Sscanf(l, "%x-%x", &lo, &hi); err == nil {
			in = lo <= addr && addr < hi
			continue
		}
		if in && strings.HasPrefix(l, "VmFlags:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmFlags:")), nil
		}
	}
	return "", fmt.Errorf("no smaps entry holds %#x", addr)
}
