package fusefs

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	digest "github.com/opencontainers/go-digest"
)

// TestListingsWithoutOpendir lists directories longer than one READDIRPLUS
// buffer of every kind (a rootfs tree directory, blobs/sha256/, a bridge
// directory of images/) twice, with a change announced in between, and
// checks that the kernel opened them without asking the daemon: it keeps
// no handle and needs none.
func TestListingsWithoutOpendir(t *testing.T) {
	t.Parallel()
	src := newFakeSource(t)
	l := newLayer(t, t.TempDir(), "l0")
	var wantFiles []string
	for i := 0; i < 300; i++ {
		n := fmt.Sprintf("file-with-a-longish-name-%03d", i)
		l.file("usr/many/"+n, []byte(n), 0o644)
		wantFiles = append(wantFiles, n)
	}
	src.layers["r"] = []string{l.dir}
	src.addImage(t, "lab.local/base:1", nil, "r", false)
	var wantTags []string
	for i := 0; i < 120; i++ {
		tag := fmt.Sprintf("t%03d", i)
		src.addImage(t, "lab.local/many:"+tag, nil, "", false)
		wantTags = append(wantTags, tag)
	}
	m := mount(t, src)

	blobNames := func() []string {
		src.mu.Lock()
		defer src.mu.Unlock()
		var names []string
		for d := range src.blobs {
			names = append(names, d.Encoded())
		}
		sort.Strings(names)
		return names
	}
	check := func(when string) {
		t.Helper()
		for dir, want := range map[string][]string{
			"rootfs/r/usr/many":     wantFiles,
			"blobs/sha256":          blobNames(),
			"images/lab.local/many": wantTags,
		} {
			got := lines(run(t, "ls", "-l", "--time-style=+", m.p(dir)))
			var names []string
			for _, g := range got {
				if f := strings.Fields(g); f[0] != "total" {
					names = append(names, f[len(f)-1])
				}
			}
			sort.Strings(names)
			if strings.Join(names, " ") != strings.Join(want, " ") {
				t.Errorf("%s: ls -l %s: %d names, want %d (%d differ)", when, dir, len(names), len(want), len(diff(names, want)))
			}
		}
	}
	check("first listing")
	check("second listing")
	for i := 0; i < 40; i++ {
		src.addBlob(t, []byte(fmt.Sprintf("added blob %d", i)))
	}
	src.addImage(t, "lab.local/many:zz", nil, "", false)
	wantTags = append(wantTags, "zz")
	m.fs.Invalidate()
	check("after a refresh")
	if n := m.fs.dirOpens.Load(); n > 1 {
		t.Errorf("the daemon got %d opendir/releasedir requests, want at most the first opendir (answered ENOSYS)", n)
	}
}

// TestNameOffsetOrder: resuming a blob listing by offset needs offsets that
// grow with the names' order and never reach the end marker.
func TestNameOffsetOrder(t *testing.T) {
	t.Parallel()
	var names []string
	for i := 0; i < 500; i++ {
		names = append(names, digest.FromString(fmt.Sprint(i)).Encoded())
	}
	names = append(names, strings.Repeat("0", 64), strings.Repeat("f", 64))
	sort.Strings(names)
	for i := 1; i < len(names); i++ {
		if a, b := nameOffset(names[i-1]), nameOffset(names[i]); a == 0 || a >= b {
			t.Errorf("offsets of %s, %s = %d, %d: want 0 < first < second", names[i-1], names[i], a, b)
		}
	}
	if o := nameOffset(names[len(names)-1]); o == ^uint64(0) {
		t.Errorf("the last name's offset is the end marker")
	}
	if o := nameOffset(strings.Repeat("0", 64)); o != 1 {
		t.Errorf("offset of the lowest name = %d, want 1", o)
	}
}

// diff returns the names in only one of two sorted lists.
func diff(a, b []string) []string {
	seen := map[string]int{}
	for _, n := range a {
		seen[n]++
	}
	for _, n := range b {
		seen[n]--
	}
	var d []string
	for n, c := range seen {
		if c != 0 {
			d = append(d, n)
		}
	}
	return d
}

// TestDirHandleSeekPastEnd: a listing that shrank between two pages ends
// where the kernel's offset lies beyond it.
func TestDirHandleSeekPastEnd(t *testing.T) {
	t.Parallel()
	h := newDirHandle([]fuse.DirEntry{{Name: "a"}, {Name: "b"}})
	if errno := h.Seekdir(t.Context(), 1); errno != 0 {
		t.Fatalf("seek to 1: %v", errno)
	}
	if e, errno := h.Readdirent(t.Context()); errno != 0 || e == nil || e.Name != "b" {
		t.Fatalf("after seek to 1: %+v, %v; want b", e, errno)
	}
	if errno := h.Seekdir(t.Context(), 7); errno != 0 {
		t.Fatalf("seek past the end: %v", errno)
	}
	if e, errno := h.Readdirent(t.Context()); errno != 0 || e != nil {
		t.Errorf("after seek past the end: %+v, %v; want the end", e, errno)
	}
}
