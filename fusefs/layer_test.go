package fusefs

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/layers/merged"
	"golang.org/x/sys/unix"
)

// tocLayer is a layer that is not a directory, like an eStargz table of
// contents: entries from a list, file contents from memory (ReaderAt).
type tocLayer map[string]string

func (l tocLayer) Walk(ctx context.Context, fn func(*merged.Entry) error) error {
	if err := fn(&merged.Entry{Attr: merged.Attr{Mode: unix.S_IFDIR | 0o755}}); err != nil {
		return err
	}
	for _, p := range []string{"etc/motd", "usr/share/big"} {
		e := merged.Entry{Path: p, Attr: merged.Attr{Mode: unix.S_IFREG | 0o644, Size: int64(len(l[p]))}}
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
}

type readerContent struct{ *strings.Reader }

func (readerContent) Close() error { return nil }

func (l tocLayer) Open(ctx context.Context, path string) (merged.Content, error) {
	s, ok := l[path]
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	return readerContent{strings.NewReader(s)}, nil
}

// treeSource serves one fixed tree as rootfs/t.
type treeSource struct {
	*fakeSource
	layers []merged.Layer
}

func (s treeSource) Rootfs(ctx context.Context, id string) (*merged.Tree, error) {
	if id != "t" {
		return nil, errdefs.ErrNotFound
	}
	return merged.BuildLayers(ctx, s.layers)
}

// TestRootfsFromOtherLayers: a tree whose layer is not a directory serves
// its files through ReadAt, over a snapshot directory below it.
func TestRootfsFromOtherLayers(t *testing.T) {
	base := newLayer(t, t.TempDir(), "base")
	base.file("etc/motd", []byte("from the snapshot\n"), 0o644)
	base.file("bin/sh", []byte("#!shell"), 0o755)
	big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB: several reads
	toc := tocLayer{"etc/motd": "from the table of contents\n", "usr/share/big": big}

	src := treeSource{fakeSource: newFakeSource(t), layers: []merged.Layer{merged.Dir(base.dir), toc}}
	src.images = append(src.images, ImageInfo{Name: "lab/lazy:1", RootfsID: "t"})
	m := mount(t, src)
	for p, want := range map[string]string{"etc/motd": toc["etc/motd"], "bin/sh": "#!shell", "usr/share/big": big} {
		b, err := os.ReadFile(m.p("rootfs/t/" + p))
		if err != nil || string(b) != want {
			t.Errorf("%s: %d bytes (%q...), %v; want %d bytes", p, len(b), b[:min(len(b), 20)], err, len(want))
		}
	}
}
