package merged

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// need fails the test when the machine cannot run it: make test installs
// every prerequisite, so nothing is skipped.
func need(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

type layerBuilder struct {
	t   *testing.T
	dir string
}

func (l layerBuilder) p(name string) string { return filepath.Join(l.dir, name) }

func (l layerBuilder) file(name, content string, mode os.FileMode) {
	l.t.Helper()
	if err := os.MkdirAll(filepath.Dir(l.p(name)), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(l.p(name), []byte(content), 0o644); err != nil {
		l.t.Fatal(err)
	}
	// chmod after creation: umask would drop bits and WriteFile ignores setuid.
	if err := unix.Chmod(l.p(name), uint32(mode.Perm())|modeBits(mode)); err != nil {
		l.t.Fatal(err)
	}
}

func modeBits(m os.FileMode) uint32 {
	var b uint32
	if m&os.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

func (l layerBuilder) dirAt(name string, mode uint32) {
	l.t.Helper()
	if err := os.MkdirAll(l.p(name), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := unix.Chmod(l.p(name), mode); err != nil {
		l.t.Fatal(err)
	}
}

func (l layerBuilder) mknod(name string, mode uint32, major, minor uint32) {
	l.t.Helper()
	if err := os.MkdirAll(filepath.Dir(l.p(name)), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := unix.Mknod(l.p(name), mode, int(unix.Mkdev(major, minor))); err != nil {
		l.t.Fatal(err)
	}
}

func (l layerBuilder) whiteout(name string) { l.mknod(name, unix.S_IFCHR, 0, 0) }

func (l layerBuilder) opaque(name string) {
	l.t.Helper()
	l.dirAt(name, 0o755)
	if err := unix.Setxattr(l.p(name), opaqueXattr, []byte("y"), 0); err != nil {
		l.t.Fatal(err)
	}
}

func (l layerBuilder) symlink(name, target string) {
	l.t.Helper()
	if err := os.MkdirAll(filepath.Dir(l.p(name)), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Symlink(target, l.p(name)); err != nil {
		l.t.Fatal(err)
	}
}

func (l layerBuilder) link(old, name string) {
	l.t.Helper()
	if err := os.Link(l.p(old), l.p(name)); err != nil {
		l.t.Fatal(err)
	}
}

func (l layerBuilder) xattr(name, attr, value string) {
	l.t.Helper()
	if err := unix.Lsetxattr(l.p(name), attr, []byte(value), 0); err != nil {
		l.t.Fatal(err)
	}
}

func (l layerBuilder) chown(name string, uid, gid int) {
	l.t.Helper()
	if err := os.Lchown(l.p(name), uid, gid); err != nil {
		l.t.Fatal(err)
	}
}

// capV2 is a valid VFS_CAP_REVISION_2 security.capability value granting
// cap_net_bind_service (bit 10) permitted+effective.
var capV2 = string([]byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

// SampleLayers writes three layers exercising every overlay rule and
// returns their directories, lowest first.
func sampleLayers(t *testing.T) []string {
	base := t.TempDir()
	var dirs []string
	mk := func(name string) layerBuilder {
		d := filepath.Join(base, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
		return layerBuilder{t, d}
	}
	l0 := mk("l0")
	l0.file("etc/passwd", "root:x:0:0\n", 0o644)
	l0.file("etc/hosts", "127.0.0.1 old\n", 0o644)
	l0.file("etc/shadow", "secret\n", 0o600)
	l0.file("bin/sh", "#!shell", 0o755|os.ModeSetuid)
	l0.file("bin/sgid", "g", 0o755|os.ModeSetgid)
	l0.file("bin/busybox", "bb", 0o755)
	l0.link("bin/busybox", "bin/ls")
	l0.link("bin/busybox", "bin/cat")
	l0.file("usr/lib/a.so", "a", 0o644)
	l0.file("usr/lib/b.so", "b", 0o644)
	l0.file("var/dir/x", "x", 0o644)
	l0.file("opt/sub/file", "f", 0o644)
	l0.mknod("dev/null", unix.S_IFCHR|0o666, 1, 3)
	l0.mknod("dev/sda", unix.S_IFBLK|0o660, 8, 0)
	l0.mknod("dev/fifo", unix.S_IFIFO|0o644, 0, 0)
	l0.file("sbin/ping", "ping", 0o755)
	l0.xattr("sbin/ping", "security.capability", capV2)
	l0.xattr("sbin/ping", "user.note", "hello")
	l0.symlink("sym", "etc/passwd")
	l0.dirAt("tmp", 0o1777)
	l0.file("home/u/f", "mine", 0o640)
	l0.chown("home/u/f", 1000, 2000)
	l0.chown("home/u", 1000, 2000)
	l0.file("old", "plain file", 0o644)
	l0.whiteout("ghost") // a whiteout in the lowest layer hides nothing and never shows

	l1 := mk("l1")
	l1.file("etc/hosts", "127.0.0.1 new host\n", 0o644)
	l1.opaque("usr/lib")
	l1.file("usr/lib/c.so", "c", 0o644)
	l1.whiteout("var/dir")
	l1.file("opt", "opt is a file now", 0o644) // non-dir over dir
	l1.file("old/inner", "dir over non-dir", 0o644)
	l1.file("bin/ls", "own ls", 0o755) // breaks one name out of the hardlink group
	l1.file("l1/h1", "h", 0o644)
	l1.link("l1/h1", "l1/h2")

	l2 := mk("l2")
	l2.whiteout("etc/passwd")
	l2.dirAt("etc", 0o700)
	l2.file("usr/lib/d.so", "d", 0o644) // merges with the opaque l1 dir
	l2.file("newdir/x", "new", 0o644)
	l2.symlink("newdir/abs", "/etc/hosts")
	l2.file("var/dir", "dir came back as a file", 0o600)
	return dirs
}

type entry struct {
	mode, uid, gid, nlink uint32
	size                  int64
	rdev                  uint64
	mtime                 unix.Timespec
	target                string
	content               string
	xattrs                string
}

func xattrString(list []Xattr) string {
	var s []string
	for _, x := range list {
		s = append(s, x.Name+"="+string(x.Value))
	}
	sort.Strings(s)
	return strings.Join(s, ";")
}

// walkKernel reads a directory tree through the kernel, as the reference.
func walkKernel(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root)
		if rel == "" {
			rel = "/"
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entry{mode: st.Mode, uid: st.Uid, gid: st.Gid, nlink: uint32(st.Nlink), size: st.Size, rdev: st.Rdev, mtime: st.Mtim}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			e.nlink = 0 // overlayfs reports 1 for merged dirs; checked separately
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			e.target, _ = os.Readlink(p)
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.content = string(b)
		}
		names, err := listXattrs(unix.AT_FDCWD, p, p)
		if err != nil {
			return err
		}
		var xs []Xattr
		for _, n := range names {
			v, err := getXattr(p, n)
			if err != nil {
				return err
			}
			xs = append(xs, Xattr{n, v})
		}
		e.xattrs = xattrString(xs)
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// walkTree reads the Tree the way the filesystem will serve it.
func walkTree(t *testing.T, tr *Tree) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	var walk func(i Ino, p string)
	walk = func(i Ino, p string) {
		a := tr.Attr(i)
		e := entry{mode: a.Mode, uid: a.Uid, gid: a.Gid, nlink: a.Nlink, size: a.Size, rdev: a.Rdev, mtime: a.Mtime, target: tr.Target(i), xattrs: xattrString(tr.Xattrs(i))}
		if a.IsDir() {
			e.nlink = 0
		}
		if a.IsRegular() {
			e.content = readContent(t, tr, i)
		}
		key := p
		if key == "" {
			key = "/"
		}
		out[key] = e
		for k := 0; k < tr.NumEntries(i); k++ {
			c := tr.Entry(i, k)
			walk(c.Ino, p+"/"+c.Name)
		}
	}
	walk(RootIno, "")
	return out
}

// readContent reads a regular file through its layer's Open.
func readContent(t *testing.T, tr *Tree, i Ino) string {
	t.Helper()
	c, err := tr.Layer(i).Open(context.Background(), tr.Path(i))
	if err != nil {
		t.Fatalf("open %s: %v", tr.Path(i), err)
	}
	defer c.Close()
	b, err := io.ReadAll(io.NewSectionReader(c, 0, 1<<30))
	if err != nil {
		t.Fatalf("read %s: %v", tr.Path(i), err)
	}
	return string(b)
}

func mountOverlay(t *testing.T, layers []string) string {
	t.Helper()
	mnt := t.TempDir()
	lower := make([]string, len(layers))
	for i, l := range layers {
		lower[len(layers)-1-i] = l
	}
	err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lower, ":"))
	need(t, "mount kernel overlay", err)
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount overlay: %v", err)
		}
	})
	return mnt
}

func TestBuildMatchesKernelOverlay(t *testing.T) {
	layers := sampleLayers(t)
	tr, err := Build(context.Background(), layers)
	if err != nil {
		t.Fatal(err)
	}
	want := walkKernel(t, mountOverlay(t, layers))
	got := walkTree(t, tr)
	// One deliberate difference: overlayfs reports the backing inode's link
	// count, which still counts /bin/ls although l1 replaced that name; the
	// tree counts the names the merged view really has.
	for _, p := range []string{"/bin/busybox", "/bin/cat"} {
		e := want[p]
		e.nlink--
		want[p] = e
	}

	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s: in the kernel overlay, missing from the tree", p)
			continue
		}
		if g != w {
			t.Errorf("%s:\n got %+v\nwant %+v", p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: in the tree, not in the kernel overlay", p)
		}
	}
}

func TestBuildRules(t *testing.T) {
	tr, err := Build(context.Background(), sampleLayers(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/etc/passwd", "/var/dir/x", "/usr/lib/a.so", "/usr/lib/b.so", "/opt/sub", "/ghost"} {
		if _, ok := tr.Lookup(p); ok {
			t.Errorf("%s: still visible", p)
		}
	}
	for p, typ := range map[string]uint32{
		"/usr/lib/c.so": unix.S_IFREG, "/usr/lib/d.so": unix.S_IFREG, "/opt": unix.S_IFREG,
		"/old": unix.S_IFDIR, "/old/inner": unix.S_IFREG, "/var/dir": unix.S_IFREG,
		"/dev/null": unix.S_IFCHR, "/dev/sda": unix.S_IFBLK, "/dev/fifo": unix.S_IFIFO, "/sym": unix.S_IFLNK,
	} {
		i, ok := tr.Lookup(p)
		if !ok {
			t.Errorf("%s: missing", p)
			continue
		}
		if m := tr.Mode(i); m&unix.S_IFMT != typ {
			t.Errorf("%s: type %o, want %o", p, m&unix.S_IFMT, typ)
		}
	}

	// Hardlinks: busybox and cat share a node; ls was replaced in l1 and
	// so no longer counts.
	bb, _ := tr.Lookup("/bin/busybox")
	cat, _ := tr.Lookup("/bin/cat")
	ls, _ := tr.Lookup("/bin/ls")
	if bb != cat || tr.Attr(bb).Nlink != 2 {
		t.Errorf("busybox/cat: inodes %d and %d, nlink %d, want one shared inode with nlink 2", bb, cat, tr.Attr(bb).Nlink)
	}
	if ls == bb || tr.Attr(ls).Nlink != 1 {
		t.Errorf("ls: inode %d (busybox %d), nlink %d, want its own inode with nlink 1", ls, bb, tr.Attr(ls).Nlink)
	}
	if d, ok := tr.Layer(ls).(Dir); !ok || !strings.HasSuffix(string(d), "/l1") {
		t.Errorf("layer of /bin/ls = %v, want layer l1", tr.Layer(ls))
	}

	etc, _ := tr.Lookup("/etc")
	if a := tr.Attr(etc); a.Mode&0o7777 != 0o700 || a.Nlink != 2 {
		t.Errorf("/etc: mode %o nlink %d, want 700 from the top layer and nlink 2", a.Mode&0o7777, a.Nlink)
	}
	if n := tr.Attr(RootIno).Nlink; n != uint32(2+countDirs(tr, RootIno)) {
		t.Errorf("root nlink %d, want %d", n, 2+countDirs(tr, RootIno))
	}
	lib, _ := tr.Lookup("/usr/lib")
	if _, ok := tr.Xattr(lib, opaqueXattr); ok {
		t.Errorf("/usr/lib: opaque marker leaked into xattrs")
	}
	ping, _ := tr.Lookup("/sbin/ping")
	if v, ok := tr.Xattr(ping, "security.capability"); !ok || !bytes.Equal(v, []byte(capV2)) {
		t.Errorf("/sbin/ping: security.capability = %x, %v", v, ok)
	}
	sh, _ := tr.Lookup("bin/sh")
	if m := tr.Mode(sh); m&unix.S_ISUID == 0 {
		t.Errorf("/bin/sh: setuid bit lost: %o", m)
	}
	if p := tr.Path(cat); p != "bin/busybox" {
		t.Errorf("path of cat's node = %s, want its first name bin/busybox", p)
	}
	// Inode numbers are numbered in sorted walk order from 1, each once.
	want := RootIno
	seen := map[Ino]bool{}
	var check func(i Ino)
	check = func(i Ino) {
		if seen[i] {
			return // a hardlink's second name
		}
		seen[i] = true
		if i != want {
			t.Errorf("%s: ino %d, want %d in walk order", tr.Path(i), i, want)
		}
		want++
		for k := 0; k < tr.NumEntries(i); k++ {
			check(tr.Entry(i, k).Ino)
		}
	}
	check(RootIno)
	if len(seen) != tr.Len() {
		t.Errorf("Len() = %d, distinct nodes %d", tr.Len(), len(seen))
	}
}

func countDirs(tr *Tree, dir Ino) int {
	c := 0
	for k := 0; k < tr.NumEntries(dir); k++ {
		if tr.Attr(tr.Entry(dir, k).Ino).IsDir() {
			c++
		}
	}
	return c
}

func TestBuildErrors(t *testing.T) {
	if _, err := Build(context.Background(), nil); err == nil {
		t.Error("no layers: want an error")
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := Build(context.Background(), []string{missing}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing layer: err = %v, want one naming the path", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Build(ctx, sampleLayers(t)); err == nil {
		t.Error("cancelled context: want an error")
	}
}

// TestBuildWithoutListxattrat: on kernels before listxattrat (6.13) the
// build lists xattrs by path and gets the same tree, xattrs included.
func TestBuildWithoutListxattrat(t *testing.T) {
	layers := sampleLayers(t)
	fast, err := Build(context.Background(), layers)
	if err != nil {
		t.Fatal(err)
	}
	noListxattrat.Store(true)
	t.Cleanup(func() { noListxattrat.Store(false) })
	slow, err := Build(context.Background(), layers)
	if err != nil {
		t.Fatal(err)
	}
	want, got := walkTree(t, fast), walkTree(t, slow)
	xattrs := 0
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s:\n got %+v\nwant %+v", p, got[p], w)
		}
		if w.xattrs != "" {
			xattrs++
		}
	}
	if len(got) != len(want) || xattrs == 0 {
		t.Errorf("%d entries by path, %d with listxattrat, %d of them with xattrs: want equal counts and some xattrs", len(got), len(want), xattrs)
	}
}
