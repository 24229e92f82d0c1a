package lazy

import (
	"context"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/internal/testimage"
	"github.com/casfs/casfs/layers/merged"
)

// BenchmarkOpenTOC opens a layer of 5,000 small files from a cold cache
// (footer and TOC fetched, verified and checked) and walks its entries:
// the CPU a lazy pull spends per layer before the mount can serve it.
func BenchmarkOpenTOC(b *testing.B) {
	var files []testimage.File
	for d := 0; d < 100; d++ {
		dir := fmt.Sprintf("usr/include/pkg%03d", d)
		files = append(files, testimage.Dir(dir, 0o755))
		for f := 0; f < 50; f++ {
			files = append(files, testimage.Reg(fmt.Sprintf("%s/header_%02d.h", dir, f), 0o644, fmt.Sprintf("/* %d %d */\n", d, f)))
		}
	}
	desc, blob := buildBlob(b, files, 0)
	rb := &remoteBlob{blob: blob}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		l, err := openLayer(b, desc, rb, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		if err := l.Walk(context.Background(), func(*merged.Entry) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != len(files)+3 {
			b.Fatalf("walked %d entries, want %d", n, len(files)+3)
		}
	}
	// CPU time per open: on a shared machine it varies less than the
	// wall time b.Loop reports.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return unix.TimevalToNsec(ru.Utime) + unix.TimevalToNsec(ru.Stime)
}
