package merged

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type memFiles map[string]string

func (m memFiles) OpenFile(p string) (io.ReaderAt, error) {
	s, ok := m[p]
	if !ok {
		return nil, os.ErrNotExist
	}
	return strings.NewReader(s), nil
}

func ent(p string, mode uint32) Entry { return Entry{Path: p, Mode: mode} }

// TestBuildEntryLayers: an entry layer over a layer directory follows the
// overlay rules in their OCI encoding (whiteouts, opaque markers, hardlinks,
// implicit parents), and its files read through Files while the lower
// layer's files keep their backing path.
func TestBuildEntryLayers(t *testing.T) {
	lower := layerBuilder{t, t.TempDir()}
	lower.file("etc/passwd", "root\n", 0o644)
	lower.file("etc/gone", "x", 0o644)
	lower.file("var/old/a", "a", 0o644)
	lower.file("keep", "lower", 0o644)
	lower.symlink("lnk", "etc")
	files := memFiles{"etc/motd": "hi\n", "var/new": "n", "lnk/x": "through"}
	upper := []Entry{
		ent("", unix.S_IFDIR|0o700),
		ent("etc", unix.S_IFDIR|0o750),
		{Path: "etc/motd", Mode: unix.S_IFREG | 0o644, Size: 3, Link: 1},
		{Path: "etc/motd2", Mode: unix.S_IFREG | 0o644, Size: 3, Link: 1},
		ent("etc/.wh.gone", unix.S_IFREG),
		ent("var/.wh..wh..opq", unix.S_IFREG),
		{Path: "var/new", Mode: unix.S_IFREG | 0o600, Size: 1},
		{Path: "lnk/x", Mode: unix.S_IFREG | 0o644, Size: 7}, // implicit dir replaces the symlink
	}
	tr, err := BuildLayers(context.Background(), []Layer{{Dir: lower.dir}, {Entries: upper, Files: files}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var walk func(p string, n *Node)
	walk = func(p string, n *Node) {
		for _, c := range n.Children() {
			q := strings.TrimPrefix(p+"/"+c.Name, "/")
			got = append(got, q)
			if c.Node.IsDir() {
				walk(q, c.Node)
			}
		}
	}
	walk("", tr.Root)
	want := "etc etc/motd etc/motd2 etc/passwd keep lnk lnk/x var var/new"
	if s := strings.Join(got, " "); s != want {
		t.Fatalf("tree %q, want %q", s, want)
	}
	if tr.Root.Mode != unix.S_IFDIR|0o700 {
		t.Errorf("root mode %o: the top layer's root attributes should show", tr.Root.Mode)
	}
	etc, _ := tr.Lookup("/etc")
	if etc.Mode != unix.S_IFDIR|0o750 {
		t.Errorf("/etc mode %o", etc.Mode)
	}
	m1, _ := tr.Lookup("/etc/motd")
	m2, _ := tr.Lookup("/etc/motd2")
	if m1 != m2 || m1.Nlink != 2 {
		t.Errorf("hardlinks: same node %v, nlink %d", m1 == m2, m1.Nlink)
	}
	r, ok, err := tr.OpenLazy(m1)
	if !ok || err != nil {
		t.Fatalf("OpenLazy(/etc/motd) = %v %v", ok, err)
	}
	b := make([]byte, 3)
	if _, err := r.ReadAt(b, 0); err != nil || !bytes.Equal(b, []byte("hi\n")) {
		t.Fatalf("read /etc/motd: %q %v", b, err)
	}
	pw, _ := tr.Lookup("/etc/passwd")
	if _, ok, _ := tr.OpenLazy(pw); ok {
		t.Fatal("a file of a layer directory opened lazily")
	}
	if got := tr.Backing(pw); got != filepath.Join(lower.dir, "etc/passwd") {
		t.Fatalf("backing of /etc/passwd = %s", got)
	}
	if !tr.Lazy() {
		t.Fatal("tree with an entry layer does not say it is lazy")
	}
}

func TestBuildEntryLayersRefusesUncleanNames(t *testing.T) {
	for _, p := range []string{"../x", "/etc/x", "a/../../x", "a//b", "./a"} {
		_, err := BuildLayers(context.Background(), []Layer{{Entries: []Entry{ent(p, unix.S_IFREG)}, Files: memFiles{}}})
		if err == nil || !strings.Contains(err.Error(), "not a clean relative path") {
			t.Errorf("entry %q: %v", p, err)
		}
	}
}
