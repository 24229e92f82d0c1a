package hugeheap

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// TestReserveMarksTheHeap: after Reserve, the mapping that holds a new
// heap object carries the huge page advice ("hg" in smaps' VmFlags).
func TestReserveMarksTheHeap(t *testing.T) {
	if err := Reserve(64 << 20); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8<<20)
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	flags, err := vmFlags(addr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(" "+flags+" ", " hg ") {
		t.Fatalf("the heap mapping holding a new object has VmFlags %q, without hg", flags)
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
