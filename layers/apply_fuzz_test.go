package layers

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/casfs/casfs/internal/testenv"
)

// fuzzSentinel is an absolute folder that hostile seeds aim at through
// absolute symlinks and hardlinks; it must stay empty.
const fuzzSentinel = "/tmp/casfs-fuzz-apply-sentinel"

// fuzzTar builds a tar from (typeflag, name, linkname, body) entries.
func fuzzTar(f *testing.F, ents ...[4]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Typeflag: e[0][0], Name: e[1], Linkname: e[2], Mode: 0o755, Size: int64(len(e[3])), Format: tar.FormatPAX}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Typeflag == tar.TypeChar {
			h.Mode = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			f.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e[3]))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// FuzzApply applies arbitrary bytes as a layer on top of a lower layer that
// holds escaping symlinks. Whatever the input: no panic, nothing appears
// next to the snapshot or in the absolute sentinel, the lower layer is not
// touched, and no file in the snapshot is a hardlink to a file outside it.
func FuzzApply(f *testing.F) {
	testenv.RequireRoot(f)
	base := f.TempDir()
	lower := filepath.Join(base, "lower")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{lower, outside, fuzzSentinel} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	f.Cleanup(func() { os.Remove(fuzzSentinel) })
	for name, target := range map[string]string{"up": "../outside", "abs": fuzzSentinel, "root": "/", "loop": "loop"} {
		if err := os.Symlink(target, filepath.Join(lower, name)); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "file"), []byte("lower"), 0o644); err != nil {
		f.Fatal(err)
	}
	lowerBefore := snapshotTree(f, lower)

	reg, dir, sym, hard, chr := "0", "5", "2", "1", "3"
	for _, seed := range [][][4]string{
		{{reg, "a", "", "x"}, {dir, "d/", "", ""}, {reg, "d/b", "", "y"}, {sym, "d/s", "../a", ""}, {hard, "h", "a", ""}},
		{{reg, "../outside/evil", "", "x"}},
		{{reg, "a/../../outside/evil", "", "x"}},
		{{reg, "/../../outside/evil", "", "x"}},
		{{sym, "s", "../outside", ""}, {reg, "s/evil", "", "x"}},
		{{sym, "s", fuzzSentinel, ""}, {reg, "s/evil", "", "x"}},
		{{sym, "s", "/", ""}, {reg, "s" + fuzzSentinel + "/evil", "", "x"}},
		{{reg, "up/evil", "", "x"}},
		{{reg, "abs/evil", "", "x"}},
		{{reg, "root" + fuzzSentinel + "/evil", "", "x"}},
		{{dir, "up/sub/", "", ""}},
		{{hard, "h", "../outside/f", ""}},
		{{hard, "h", fuzzSentinel + "/../../../etc/passwd", ""}},
		{{sym, "s", "/etc", ""}, {hard, "h", "s/passwd", ""}},
		{{hard, "h", "file", ""}, {reg, "h", "", "overwrite"}},
		{{hard, "h", "abs/x", ""}},
		{{chr, "up/null", "", ""}},
		{{reg, "a/.wh..", "", ""}, {reg, ".wh.up", "", ""}, {reg, "up/.wh..wh..opq", "", ""}},
		{{reg, "loop/x", "", ""}},
		{{dir, "a/", "", ""}, {sym, "a", "/", ""}, {reg, "a/etc/evil", "", ""}},
	} {
		f.Add(fuzzTar(f, seed...))
	}
	f.Add([]byte{})
	f.Add([]byte("not a tar at all"))

	f.Fuzz(func(t *testing.T, data []byte) {
		snap := filepath.Join(t.TempDir(), "fs")
		if err := os.Mkdir(snap, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		_, err := Apply(ctx, snap, bytes.NewReader(data), ApplyOptions{Lowers: []string{lower}, MaxBytes: 4 << 20, MaxEntries: 2000})
		if err != nil && err.Error() == "" {
			t.Fatal("empty error")
		}
		for _, d := range []string{outside, fuzzSentinel} {
			if ents, err := os.ReadDir(d); err == nil && len(ents) > 0 {
				os.RemoveAll(d)
				os.MkdirAll(d, 0o755)
				t.Fatalf("layer wrote %s into %s (apply err %v)", ents[0].Name(), d, err)
			}
		}
		if ents, _ := os.ReadDir(filepath.Dir(snap)); len(ents) != 1 {
			t.Fatalf("layer created %d entries next to the snapshot", len(ents))
		}
		if now := snapshotTree(t, lower); !equalTrees(now, lowerBefore) {
			t.Fatalf("the lower layer changed: %v", now)
		}
		// A hardlink to a file outside the snapshot shows as more links
		// than the snapshot itself holds.
		links := map[uint64]int{}
		nlink := map[uint64]uint64{}
		filepath.Walk(snap, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				st := fi.Sys().(*syscall.Stat_t)
				links[st.Ino]++
				nlink[st.Ino] = uint64(st.Nlink)
			}
			return nil
		})
		for ino, n := range links {
			if nlink[ino] > uint64(n) {
				t.Fatalf("inode %d has %d links but the snapshot holds %d: a hardlink escaped", ino, nlink[ino], n)
			}
		}
	})
}

// snapshotTree maps each path under dir to its mode, size and link target.
func snapshotTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		v := fi.Mode().String()
		if fi.Mode()&os.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			v += " -> " + l
		} else if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			v += " " + string(b)
		}
		out[p] = v
		return nil
	})
	return out
}

func equalTrees(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
