package merged

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// memLayer is a layer that is not a directory, the way a table of contents
// serves one: entries from a list, contents from memory.
type memLayer struct {
	ents  []Entry
	files map[string]string
}

func (m memLayer) Walk(ctx context.Context, fn func(*Entry) error) error {
	for i := range m.ents {
		e := m.ents[i]
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
}

type memContent struct{ *strings.Reader }

func (memContent) Close() error { return nil }

func (m memLayer) Open(ctx context.Context, path string) (Content, error) {
	s, ok := m.files[path]
	if !ok {
		return nil, errors.New("no such file")
	}
	return memContent{strings.NewReader(s)}, nil
}

func dirEntry(p string, mode uint32) Entry {
	return Entry{Path: p, Attr: Attr{Mode: unix.S_IFDIR | mode}}
}

func fileEntry(p, content string, link uint64) Entry {
	return Entry{Path: p, Attr: Attr{Mode: unix.S_IFREG | 0o644, Size: int64(len(content))}, Link: link}
}

func TestBuildLayersFromEntries(t *testing.T) {
	lower := memLayer{
		ents: []Entry{
			dirEntry("", 0o755),
			dirEntry("etc", 0o755),
			fileEntry("etc/passwd", "root", 0),
			fileEntry("etc/group", "wheel", 0),
			dirEntry("opt", 0o755),
			fileEntry("opt/old", "old", 0),
			fileEntry("usr/bin/a", "same", 7), // parents not listed: made
			fileEntry("usr/bin/b", "same", 7),
		},
		files: map[string]string{"etc/passwd": "root", "etc/group": "wheel", "opt/old": "old", "usr/bin/a": "same", "usr/bin/b": "same"},
	}
	upper := memLayer{
		ents: []Entry{
			dirEntry("", 0o700),
			{Path: "etc/group", Whiteout: true},
			{Path: "opt", Attr: Attr{Mode: unix.S_IFDIR | 0o750}, Opaque: true},
			fileEntry("opt/new", "new", 0),
			{Path: "link", Attr: Attr{Mode: unix.S_IFLNK | 0o777}, Target: "etc/passwd"},
		},
		files: map[string]string{"opt/new": "new"},
	}
	tr, err := BuildLayers(context.Background(), []Layer{lower, upper})
	if err != nil {
		t.Fatal(err)
	}
	got := walkTree(t, tr)
	want := map[string]string{
		"/": "dir 700", "/etc": "dir 755", "/etc/passwd": "file root", "/opt": "dir 750", "/opt/new": "file new",
		"/usr": "dir 755", "/usr/bin": "dir 755", "/usr/bin/a": "file same", "/usr/bin/b": "file same", "/link": "link etc/passwd",
	}
	for p, w := range want {
		e, ok := got[p]
		var g string
		switch {
		case !ok:
			g = "missing"
		case e.mode&unix.S_IFMT == unix.S_IFDIR:
			g = fmt.Sprintf("dir %o", e.mode&0o7777)
		case e.mode&unix.S_IFMT == unix.S_IFLNK:
			g = "link " + e.target
		default:
			g = "file " + e.content
		}
		if g != w {
			t.Errorf("%s: %s, want %s", p, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("tree has %d entries, want %d: %v", len(got), len(want), got)
	}
	a, _ := tr.Lookup("usr/bin/a")
	b, _ := tr.Lookup("usr/bin/b")
	if a != b || tr.Attr(a).Nlink != 2 {
		t.Errorf("usr/bin/a and b: inodes %d and %d nlink %d, want one inode with nlink 2", a, b, tr.Attr(a).Nlink)
	}
	if _, ok := tr.Layer(a).(memLayer); !ok {
		t.Errorf("layer of usr/bin/a is %T, want the memLayer", tr.Layer(a))
	}
	c, err := tr.Layer(a).Open(context.Background(), tr.Path(a))
	if err != nil {
		t.Fatal(err)
	}
	if _, isFile := c.(interface{ Fd() uintptr }); isFile {
		t.Error("memLayer content claims a file descriptor")
	}
	buf := make([]byte, 4)
	if n, err := c.ReadAt(buf, 0); (err != nil && err != io.EOF) || string(buf[:n]) != "same" {
		t.Errorf("ReadAt = %q, %v", buf[:n], err)
	}
}

func TestBuildLayersRejectsBadEntries(t *testing.T) {
	for name, l := range map[string]memLayer{
		"no root":        {ents: []Entry{fileEntry("a", "", 0)}},
		"root is a file": {ents: []Entry{fileEntry("", "", 0)}},
		"dot-dot name":   {ents: []Entry{dirEntry("", 0o755), fileEntry("a/..", "", 0)}},
	} {
		if _, err := BuildLayers(context.Background(), []Layer{l}); err == nil || !strings.Contains(err.Error(), "layer 0") {
			t.Errorf("%s: err = %v, want an error naming layer 0", name, err)
		}
	}
}
