package fusefs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/casfs/casfs/layers/merged"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// capV2 is a valid security.capability value (cap_net_bind_service).
var capV2 = []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

type fixture struct {
	src    *fakeSource
	big    digest.Digest // a layer blob big enough for random reads
	bigB   []byte
	alpine ImageInfo
	app1   ImageInfo
	appSub ImageInfo
	pinned ImageInfo
	pinDir string   // the pinned image's directory name: app@<digest>
	layers []string // rootfs r1
}

func randomBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	src := newFakeSource(t)
	fx := &fixture{src: src}
	fx.bigB = randomBytes(3<<20+123, 1)
	fx.big = src.addBlob(t, fx.bigB)
	small := src.addBlob(t, randomBytes(4096, 2))

	base := t.TempDir()
	l0 := newLayer(t, base, "l0")
	l0.file("etc/hosts", []byte("127.0.0.1 localhost\n"), 0o644)
	l0.file("etc/shadow", []byte("root:*:\n"), 0o600)
	l0.file("etc/passwd", []byte("root:x:0:0\n"), 0o644)
	l0.file("bin/busybox", randomBytes(200<<10, 3), 0o755)
	l0.do(os.Link(l0.p("bin/busybox"), l0.p("bin/ls")))
	l0.do(os.Link(l0.p("bin/busybox"), l0.p("bin/cat")))
	l0.file("bin/su", []byte("su"), 0o4755)
	l0.file("bin/ping", []byte("ping"), 0o755)
	l0.do(unix.Lsetxattr(l0.p("bin/ping"), "security.capability", capV2, 0))
	l0.do(unix.Lsetxattr(l0.p("bin/ping"), "user.origin", []byte("test"), 0))
	l0.mknod("dev/null", unix.S_IFCHR|0o666, 1, 3)
	l0.mknod("dev/sda", unix.S_IFBLK|0o660, 8, 0)
	l0.mknod("dev/big", unix.S_IFCHR|0o600, 300, 70000)
	l0.file("usr/lib/a.so", []byte("a"), 0o644)
	l0.file("home/u/notes", []byte("mine"), 0o640)
	l0.do(os.Lchown(l0.p("home/u/notes"), 1000, 2000))
	l0.do(os.MkdirAll(l0.p("tmp"), 0o755))
	l0.do(unix.Chmod(l0.p("tmp"), 0o1777))
	l0.do(os.Symlink("busybox", l0.p("bin/sh")))
	l0.do(os.Symlink("/etc/hosts", l0.p("hosts")))
	l1 := newLayer(t, base, "l1")
	l1.mknod("etc/passwd", unix.S_IFCHR, 0, 0) // whiteout
	l1.do(os.MkdirAll(l1.p("usr/lib"), 0o755))
	l1.do(unix.Setxattr(l1.p("usr/lib"), "trusted.overlay.opaque", []byte("y"), 0))
	l1.file("usr/lib/b.so", []byte("b"), 0o644)
	l1.file("etc/hosts", []byte("127.0.0.1 upper\n"), 0o644)
	fx.layers = []string{l0.dir, l1.dir}
	src.layers["r1"] = fx.layers

	fx.alpine = src.addImage(t, "docker.io/library/alpine:3", []digest.Digest{fx.big, small}, "r1", true)
	fx.app1 = src.addImage(t, "lab.local:5000/team/app:1", []digest.Digest{small}, "", false)
	fx.appSub = src.addImage(t, "lab.local:5000/team/app/1:latest", []digest.Digest{fx.big}, "", false)
	pinnedMan := fx.app1.Manifest
	fx.pinDir = "app@" + string(pinnedMan)
	fx.pinned = src.addImage(t, "lab.local:5000/team/"+fx.pinDir, []digest.Digest{small}, "", false)
	return fx
}

func TestBlobsTree(t *testing.T) {
	fx := newFixture(t)
	m := mount(t, fx.src)

	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == m.dir {
			line = l
		}
	}
	if f := strings.Fields(line); len(f) < 4 || f[0] != "/var/lib/casfs-test" || f[2] != "fuse.casfs" || !strings.HasPrefix(f[3], "ro,") {
		t.Errorf("/proc/self/mounts line = %q, want source /var/lib/casfs-test, type fuse.casfs, ro", line)
	}

	want := map[string]bool{}
	for d := range fx.src.blobs {
		want[d.Encoded()] = true
	}
	got := lines(run(t, "ls", m.p("blobs/sha256")))
	if len(got) != len(want) {
		t.Fatalf("ls blobs/sha256: %d entries, want %d", len(got), len(want))
	}
	for _, hex := range got {
		if !want[hex] {
			t.Errorf("ls blobs/sha256: unexpected %s", hex)
		}
	}
	for d, size := range fx.src.blobs {
		p := m.p("blobs/sha256/" + d.Encoded())
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != size || st.Mode() != 0o400 || !st.ModTime().Equal(fakeBlobTime) {
			t.Errorf("%s: size %d mode %v mtime %v, want %d, -r-------- and the record's %v", d, st.Size(), st.Mode(), st.ModTime(), size, fakeBlobTime)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if digest.FromBytes(b) != d {
			t.Errorf("%s: content hashes to %s", d, digest.FromBytes(b))
		}
	}
	if sum := strings.Fields(run(t, "sha256sum", m.p("blobs/sha256/"+fx.big.Encoded())))[0]; sum != fx.big.Encoded() {
		t.Errorf("sha256sum through the mount = %s, want %s", sum, fx.big.Encoded())
	}

	// Random reads at odd offsets.
	f, err := os.Open(m.p("blobs/sha256/" + fx.big.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewSource(7))
	for i := 0; i < 200; i++ {
		off := r.Int63n(int64(len(fx.bigB)))
		buf := make([]byte, 1+r.Intn(70000))
		n, err := f.ReadAt(buf, off)
		if err != nil && !(errors.Is(err, fs.ErrClosed) || err.Error() == "EOF") {
			t.Fatalf("pread %d at %d: %v", len(buf), off, err)
		}
		if !bytes.Equal(buf[:n], fx.bigB[off:off+int64(n)]) {
			t.Fatalf("pread %d at %d: bytes differ", len(buf), off)
		}
		if want := min(int64(len(buf)), int64(len(fx.bigB))-off); int64(n) != want {
			t.Fatalf("pread %d at %d: got %d bytes, want %d", len(buf), off, n, want)
		}
	}

	// Sixteen concurrent readers of one blob.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := os.ReadFile(m.p("blobs/sha256/" + fx.big.Encoded()))
			if err == nil && !bytes.Equal(b, fx.bigB) {
				err = errors.New("content differs")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent reader: %v", err)
		}
	}

	if _, err := os.Stat(m.p("blobs/sha256/" + strings.Repeat("0", 64))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unknown blob: err = %v, want ENOENT", err)
	}
	if _, err := os.Stat(m.p("blobs/sha256/not-hex")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("malformed name: err = %v, want ENOENT", err)
	}
	if err := os.WriteFile(m.p("blobs/sha256/"+fx.big.Encoded()), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) && !errors.Is(err, fs.ErrPermission) {
		t.Errorf("write to a blob: err = %v, want EROFS or EACCES", err)
	}

	active, known := m.fs.Passthrough()
	if !known {
		t.Errorf("passthrough state unknown after reads")
	}
	if !strings.Contains(m.log.String(), "fuse passthrough") {
		t.Errorf("log does not say whether passthrough is active:\n%s", m.log.String())
	}
	if n := strings.Count(m.log.String(), "fuse passthrough"); n != 1 {
		t.Errorf("passthrough logged %d times, want once", n)
	}
	t.Logf("passthrough active: %v", active)
}

func TestImagesTree(t *testing.T) {
	fx := newFixture(t)
	m := mount(t, fx.src)

	alpine := m.p("images/docker.io/library/alpine/3")
	app1 := m.p("images/lab.local:5000/team/app/1")
	pinned := m.p("images/lab.local:5000/team/" + fx.pinDir)

	wantNames := map[string][]string{
		alpine: {"config.json", "digest", "index.json", "layers", "manifest.json", "rootfs"},
		// app:1 and the sub-repository app/1 share the directory.
		app1:                              {"config.json", "digest", "latest", "layers", "manifest.json"},
		pinned:                            {"config.json", "digest", "layers", "manifest.json"},
		m.p("images/lab.local:5000/team"): {"app", fx.pinDir},
		m.p("images"):                     {"docker.io", "lab.local:5000"},
		m.dir:                             {"blobs", "images", "rootfs"},
		m.p("rootfs"):                     {"r1"},
	}
	for dir, want := range wantNames {
		got := lines(run(t, "ls", dir))
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("ls %s = %v, want %v", dir, got, want)
		}
	}

	blob := func(d digest.Digest) []byte {
		b, err := os.ReadFile(filepath.Join(fx.src.dir, d.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	checkFile := func(p string, want []byte) {
		t.Helper()
		got, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s: %v", p, err)
			return
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	for dir, img := range map[string]ImageInfo{alpine: fx.alpine, app1: fx.app1, pinned: fx.pinned, app1 + "/latest": fx.appSub} {
		checkFile(dir+"/manifest.json", blob(img.Manifest))
		checkFile(dir+"/config.json", blob(img.Config))
		for _, name := range []string{"manifest.json", "config.json", "layers/0"} {
			st, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Errorf("stat %s/%s: %v", dir, name, err)
			} else if !st.ModTime().Equal(fakeBlobTime) {
				t.Errorf("%s/%s: mtime %v, want the record's %v", dir, name, st.ModTime(), fakeBlobTime)
			}
		}
		checkFile(dir+"/digest", []byte(string(img.Target.Digest)+"\n"))
		for i, l := range img.Layers {
			p := filepath.Join(dir, "layers", string(rune('0'+i)))
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			if filepath.IsAbs(target) || !strings.HasSuffix(target, "/blobs/sha256/"+l.Encoded()) {
				t.Errorf("%s -> %s, want a relative link to blobs/sha256/%s", p, target, l.Encoded())
			}
			// The relative link resolves inside the mount.
			if got, want := filepath.Clean(filepath.Join(filepath.Dir(p), target)), m.p("blobs/sha256/"+l.Encoded()); got != want {
				t.Errorf("%s resolves to %s, want %s", p, got, want)
			}
			checkFile(p, blob(l))
		}
	}
	checkFile(alpine+"/index.json", blob(fx.alpine.Target.Digest))
	if _, err := os.Stat(app1 + "/index.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("single-platform image has index.json: %v", err)
	}
	target, err := os.Readlink(alpine + "/rootfs")
	if err != nil {
		t.Fatal(err)
	}
	if target != "../../../../../rootfs/r1" {
		t.Errorf("rootfs link = %s, want ../../../../../rootfs/r1", target)
	}
	checkFile(alpine+"/rootfs/etc/hosts", []byte("127.0.0.1 upper\n"))

	// find over the images tree sees everything and follows nothing.
	found := lines(run(t, "find", m.p("images"), "-type", "l"))
	if len(found) != 2+1+1+1+1 { // alpine: 2 layers + rootfs; app1, appSub, pinned: 1 layer each
		t.Errorf("find -type l under images/ = %d links, want 6:\n%s", len(found), strings.Join(found, "\n"))
	}
	if _, err := os.Stat(m.p("images/docker.io/library/alpine/4")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unknown tag: %v", err)
	}
}

type attrs struct {
	mode, uid, gid uint32
	nlink          uint64
	size           int64
	rdev           uint64
	mtime          int64
	target         string
	content        string
	xattrs         string
}

func TestRootfsMatchesTree(t *testing.T) {
	fx := newFixture(t)
	m := mount(t, fx.src)
	root := m.p("rootfs/r1")

	tr, err := merged.Build(t.Context(), fx.layers)
	if err != nil {
		t.Fatal(err)
	}
	want := treeAttrs(t, tr)
	got, inos := mountAttrs(t, root)
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%q: missing from the mount", p)
		} else if g != w {
			t.Errorf("%q:\n got %+v\nwant %+v", p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%q: in the mount, not in the tree", p)
		}
	}

	if inos["/bin/ls"] != inos["/bin/busybox"] || inos["/bin/cat"] != inos["/bin/busybox"] || got["/bin/ls"].nlink != 3 {
		t.Errorf("hardlinks: inos %d %d %d nlink %d, want one inode with nlink 3", inos["/bin/busybox"], inos["/bin/ls"], inos["/bin/cat"], got["/bin/ls"].nlink)
	}
	if got["/bin/su"].mode&unix.S_ISUID == 0 || got["/tmp"].mode&unix.S_ISVTX == 0 {
		t.Errorf("setuid/sticky bits lost: su %o tmp %o", got["/bin/su"].mode, got["/tmp"].mode)
	}
	if d := got["/dev/big"]; d.mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(d.rdev) != 300 || unix.Minor(d.rdev) != 70000 {
		t.Errorf("/dev/big: mode %o rdev %d:%d, want char 300:70000", d.mode, unix.Major(d.rdev), unix.Minor(d.rdev))
	}
	for _, gone := range []string{"/etc/passwd", "/usr/lib/a.so"} {
		if _, ok := got[gone]; ok {
			t.Errorf("%s: shows although an upper layer removes it", gone)
		}
	}

	// Tools see what they should.
	requireCmd(t, "getfattr")
	out := run(t, "getfattr", "-d", "-m", "-", "-e", "hex", filepath.Join(root, "bin/ping"))
	if !strings.Contains(out, "security.capability=0x0100000200040000") || !strings.Contains(out, "user.origin=0x74657374") {
		t.Errorf("getfattr on bin/ping:\n%s", out)
	}
	v := make([]byte, 64)
	// No labels or ACLs in the tree: EOPNOTSUPP, so ls -l stops asking.
	for _, name := range []string{"security.selinux", "system.posix_acl_access", "system.posix_acl_default"} {
		if _, err := unix.Lgetxattr(filepath.Join(root, "etc/hosts"), name, v); !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("%s on a tree without any: err = %v, want EOPNOTSUPP", name, err)
		}
	}
	for _, name := range []string{"user.nope", "security.capability"} {
		if _, err := unix.Lgetxattr(filepath.Join(root, "etc/hosts"), name, v); !errors.Is(err, unix.ENODATA) {
			t.Errorf("missing %s: err = %v, want ENODATA", name, err)
		}
	}
	// ls -l costs no xattr round trip per file.
	before := m.fs.xattrCalls.Load()
	run(t, "ls", "-lR", root)
	if calls := m.fs.xattrCalls.Load() - before; calls > 4 {
		t.Errorf("ls -lR over %d nodes made %d xattr requests, want at most 4", tr.Len(), calls)
	}
	if n, err := unix.Lgetxattr(filepath.Join(root, "bin/ping"), "security.capability", nil); err != nil || n != len(capV2) {
		t.Errorf("size query of security.capability = %d, %v; want %d", n, err, len(capV2))
	}
	if _, err := unix.Lgetxattr(filepath.Join(root, "bin/ping"), "security.capability", make([]byte, 3)); !errors.Is(err, unix.ERANGE) {
		t.Errorf("short buffer: err = %v, want ERANGE", err)
	}
	if target := strings.TrimSpace(run(t, "readlink", filepath.Join(root, "bin/sh"))); target != "busybox" {
		t.Errorf("readlink bin/sh = %q", target)
	}
	if got := strings.TrimSpace(run(t, "stat", "-c", "%A %U:%G %h %t:%T", filepath.Join(root, "dev/null"))); got != "crw-rw-rw- root:root 1 1:3" {
		t.Errorf("stat dev/null = %q", got)
	}
	if got := strings.TrimSpace(run(t, "stat", "-c", "%A %u:%g", filepath.Join(root, "home/u/notes"))); got != "-rw-r----- 1000:2000" {
		t.Errorf("stat home/u/notes = %q", got)
	}
	findOut := lines(run(t, "find", root))
	if len(findOut) != len(want) {
		t.Errorf("find: %d paths, want %d", len(findOut), len(want))
	}

	// Random reads of a rootfs file.
	bb := []byte(want["/bin/busybox"].content)
	f, err := os.Open(filepath.Join(root, "bin/cat"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewSource(9))
	for i := 0; i < 100; i++ {
		off := r.Int63n(int64(len(bb)))
		buf := make([]byte, 1+r.Intn(9000))
		n, _ := f.ReadAt(buf, off)
		if !bytes.Equal(buf[:n], bb[off:off+int64(n)]) || int64(n) != min(int64(len(buf)), int64(len(bb))-off) {
			t.Fatalf("pread %d at %d: wrong bytes (%d read)", len(buf), off, n)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/hosts"), []byte("x"), 0o644); err == nil {
		t.Errorf("writing into a rootfs succeeded")
	}
}

func TestInvalidate(t *testing.T) {
	fx := newFixture(t)
	m := mount(t, fx.src)

	newDir := m.p("images/docker.io/library/busybox/1")
	// Cache a negative entry and a directory listing first.
	if _, err := os.Stat(newDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("before: %v", err)
	}
	before := lines(run(t, "ls", m.p("blobs/sha256")))
	libBefore := lines(run(t, "ls", m.p("images/docker.io/library")))
	newBlob := m.p("blobs/sha256/" + digest.FromBytes([]byte("a brand new layer")).Encoded())
	for _, p := range []string{newBlob, m.p("rootfs/r2")} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("before: %s: %v", p, err)
		}
	}

	nb := fx.src.addBlob(t, []byte("a brand new layer"))
	img := fx.src.addImage(t, "docker.io/library/busybox:1", []digest.Digest{nb}, "", false)
	fx.src.layers["r2"] = fx.layers
	retag := fx.src.addImage(t, "docker.io/library/other:1", []digest.Digest{nb}, "r2", false)
	m.fs.Invalidate()

	b, err := os.ReadFile(newDir + "/digest")
	if err != nil || string(b) != string(img.Target.Digest)+"\n" {
		t.Fatalf("new image after Invalidate: %q, %v", b, err)
	}
	if b, err := os.ReadFile(newBlob); err != nil || string(b) != "a brand new layer" {
		t.Errorf("new blob after Invalidate: %q, %v", b, err)
	}
	after := lines(run(t, "ls", m.p("blobs/sha256")))
	if len(after) != len(before)+5 { // a layer and two configs and manifests
		t.Errorf("ls blobs/sha256: %d entries after adding 5 blobs to %d", len(after), len(before))
	}
	if got := lines(run(t, "ls", m.p("images/docker.io/library"))); len(got) != len(libBefore)+2 {
		t.Errorf("ls images/docker.io/library = %v (was %v)", got, libBefore)
	}
	if got := lines(run(t, "ls", m.p("rootfs"))); strings.Join(got, " ") != "r1 r2" {
		t.Errorf("ls rootfs = %v, want r1 r2", got)
	}
	if _, err := os.Stat(m.p("rootfs/r2/bin/busybox")); err != nil {
		t.Errorf("new rootfs: %v", err)
	}

	// Retag busybox:1 to other's content: same directory, new files.
	fx.src.removeImage("docker.io/library/busybox:1")
	moved := retag
	moved.Name = "docker.io/library/busybox:1"
	fx.src.mu.Lock()
	fx.src.images = append(fx.src.images, moved)
	fx.src.mu.Unlock()
	// Hold the old directory open: its inode must not leak into the new view.
	m.fs.Invalidate()
	if b, err := os.ReadFile(newDir + "/digest"); err != nil || string(b) != string(retag.Target.Digest)+"\n" {
		t.Errorf("retagged image digest = %q, %v; want %s", b, err, retag.Target.Digest)
	}
	if _, err := os.Readlink(newDir + "/rootfs"); err != nil {
		t.Errorf("retagged image has no rootfs link: %v", err)
	}

	// Removal.
	fx.src.removeImage("docker.io/library/busybox:1")
	fx.src.removeImage("docker.io/library/other:1")
	fx.src.removeBlob(nb)
	m.fs.Invalidate()
	if _, err := os.Stat(newDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removed image still there: %v", err)
	}
	if _, err := os.Stat(m.p("blobs/sha256/" + nb.Encoded())); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removed blob still there: %v", err)
	}
	if _, err := os.Stat(m.p("rootfs/r2")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removed rootfs still there: %v", err)
	}
	if got := lines(run(t, "ls", m.p("images/docker.io/library"))); strings.Join(got, " ") != strings.Join(libBefore, " ") {
		t.Errorf("ls images/docker.io/library = %v, want %v", got, libBefore)
	}
	if got := lines(run(t, "ls", m.p("rootfs"))); strings.Join(got, " ") != "r1" {
		t.Errorf("ls rootfs = %v, want r1", got)
	}
}

func TestOpenBlobFailureGivesEIO(t *testing.T) {
	fx := newFixture(t)
	fx.src.setFailOpen(fx.big, errors.New("fetch "+string(fx.big)+" from lab.local:5000: connection refused"))
	m := mount(t, fx.src)

	requireCmd(t, "cat")
	out, err := exec.Command("cat", m.p("blobs/sha256/"+fx.big.Encoded())).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Input/output error") {
		t.Errorf("cat of an unfetchable blob: err %v, output %q; want an Input/output error", err, out)
	}
	if _, err := os.ReadFile(m.p("images/docker.io/library/alpine/3/layers/0")); !errors.Is(err, syscall.EIO) {
		t.Errorf("read through the layer link: err = %v, want EIO", err)
	}
	if !strings.Contains(m.log.String(), "connection refused") {
		t.Errorf("the reason is not in the log:\n%s", m.log.String())
	}
	// The mount keeps serving.
	if b, err := os.ReadFile(m.p("images/docker.io/library/alpine/3/manifest.json")); err != nil || digest.FromBytes(b) != fx.alpine.Manifest {
		t.Errorf("other blob after a failure: %v", err)
	}
	fx.src.setFailOpen(fx.big, nil)
	if b, err := os.ReadFile(m.p("blobs/sha256/" + fx.big.Encoded())); err != nil || !bytes.Equal(b, fx.bigB) {
		t.Errorf("blob once the fetch works: %v", err)
	}
}

func TestBindMountReadByOtherProcess(t *testing.T) {
	fx := newFixture(t)
	m := mount(t, fx.src)
	bind := t.TempDir()
	// Let another user reach the bind mount: test temp dirs are 0700.
	for _, d := range []string{filepath.Dir(bind), bind} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(m.p("rootfs/r1"), bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(bind, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount bind: %v", err)
		}
	})
	if got := run(t, "cat", filepath.Join(bind, "etc/hosts")); got != "127.0.0.1 upper\n" {
		t.Errorf("cat through the bind mount = %q", got)
	}
	// Another user reads what the modes allow and nothing else
	// (allow_other + default_permissions).
	requireCmd(t, "setpriv")
	nobody := []string{"--reuid=65534", "--regid=65534", "--clear-groups"}
	out, err := exec.Command("setpriv", append(nobody, "cat", filepath.Join(bind, "etc/hosts"))...).CombinedOutput()
	if err != nil || string(out) != "127.0.0.1 upper\n" {
		t.Errorf("nobody reading etc/hosts: %v %q", err, out)
	}
	out, err = exec.Command("setpriv", append(nobody, "cat", filepath.Join(bind, "etc/shadow"))...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("nobody reading etc/shadow (0600 root): %v %q; want Permission denied", err, out)
	}
}

// treeAttrs is what a tree should show through the mount, by path ("" is
// the root).
func treeAttrs(t *testing.T, tr *merged.Tree) map[string]attrs {
	t.Helper()
	want := map[string]attrs{}
	var walk func(i merged.Ino, p string)
	walk = func(i merged.Ino, p string) {
		n := tr.Attr(i)
		a := attrs{mode: n.Mode, uid: n.Uid, gid: n.Gid, nlink: uint64(n.Nlink), size: n.Size, rdev: n.Rdev, mtime: n.Mtime.Nano(), target: tr.Target(i)}
		if n.IsRegular() {
			c, err := tr.Layer(i).Open(t.Context(), tr.Path(i))
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(io.NewSectionReader(c, 0, n.Size))
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			a.content = string(b)
		}
		var xs []string
		for _, x := range tr.Xattrs(i) {
			xs = append(xs, x.Name+"="+string(x.Value))
		}
		sort.Strings(xs)
		a.xattrs = strings.Join(xs, ";")
		want[p] = a
		for k := 0; k < tr.NumEntries(i); k++ {
			c := tr.Entry(i, k)
			walk(c.Ino, p+"/"+c.Name)
		}
	}
	walk(merged.RootIno, "")
	return want
}

// mountAttrs walks a directory of the mount with the usual system calls,
// and returns what it shows and the inode numbers, by path.
func mountAttrs(t *testing.T, root string) (map[string]attrs, map[string]uint64) {
	t.Helper()
	got := map[string]attrs{}
	inos := map[string]uint64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		inos[rel] = st.Ino
		a := attrs{mode: st.Mode, uid: st.Uid, gid: st.Gid, nlink: st.Nlink, size: st.Size, rdev: st.Rdev, mtime: st.Mtim.Nano()}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			a.target, _ = os.Readlink(p)
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			a.content = string(b)
		}
		var xs []string
		sz, err := unix.Llistxattr(p, nil)
		if err != nil {
			return err
		}
		if sz > 0 {
			buf := make([]byte, sz)
			sz, _ = unix.Llistxattr(p, buf)
			for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
				v := make([]byte, 256)
				n, err := unix.Lgetxattr(p, name, v)
				if err != nil {
					return err
				}
				xs = append(xs, name+"="+string(v[:n]))
			}
		}
		sort.Strings(xs)
		a.xattrs = strings.Join(xs, ";")
		got[rel] = a
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, inos
}
