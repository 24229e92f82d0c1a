package layers

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

func requireCmd(t *testing.T, cmd string) { testenv.Require(t, cmd) }

func requireRoot(t *testing.T) { testenv.RequireRoot(t) }

var t0 = time.Unix(1600000000, 0)

// tent is one tar entry to write.
type tent struct {
	h    tar.Header
	body string
}

func tDir(name string, mode int64) tent {
	return tent{h: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: t0}}
}
func tFile(name string, mode int64, body string) tent {
	return tent{h: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: t0}, body: body}
}
func tSym(name, target string) tent {
	return tent{h: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: t0}}
}
func tHard(name, target string) tent {
	return tent{h: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: t0}}
}
func tChar(name string, major, minor int64) tent {
	return tent{h: tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: t0}}
}
func tBlock(name string, major, minor int64) tent {
	return tent{h: tar.Header{Typeflag: tar.TypeBlock, Name: name, Mode: 0o660, Devmajor: major, Devminor: minor, ModTime: t0}}
}
func tFifo(name string) tent {
	return tent{h: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o644, ModTime: t0}}
}
func tWh(name string) tent { // name is the deleted path
	dir, base := filepath.Split(name)
	return tFile(dir+".wh."+base, 0o644, "")
}
func tOpq(dir string) tent { return tFile(filepath.Join(dir, ".wh..wh..opq"), 0o644, "") }

func (e tent) own(uid, gid int) tent   { e.h.Uid, e.h.Gid = uid, gid; return e }
func (e tent) mtime(tm time.Time) tent { e.h.ModTime = tm; return e }
func (e tent) x(k, v string) tent {
	m := map[string]string{}
	for a, b := range e.h.PAXRecords {
		m[a] = b
	}
	m["SCHILY.xattr."+k] = v
	e.h.PAXRecords = m
	e.h.Format = tar.FormatPAX
	return e
}

func mkTar(t testing.TB, ents ...tent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.h
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:16]
}

// Expected listing lines. The format is the one listTree writes.
type exp struct {
	path, typ string
	mode      uint32
	uid, gid  int
	extra     string
	xattrs    []string
	mtime     bool
}

func eDir(p string, mode uint32) exp { return exp{path: p, typ: "d", mode: mode} }
func eFile(p string, mode uint32, body string) exp {
	return exp{path: p, typ: "f", mode: mode, extra: fmt.Sprintf("size=%d sha=%s", len(body), sha(body)), mtime: true}
}
func eSym(p, target string) exp {
	return exp{path: p, typ: "l", mode: 0o777, extra: "-> " + target, mtime: true}
}
func eChar(p string, mode uint32, major, minor int) exp {
	return exp{path: p, typ: "c", mode: mode, extra: fmt.Sprintf("dev=%d:%d", major, minor), mtime: true}
}
func eBlock(p string, mode uint32, major, minor int) exp {
	return exp{path: p, typ: "b", mode: mode, extra: fmt.Sprintf("dev=%d:%d", major, minor), mtime: true}
}
func eFifo(p string, mode uint32) exp { return exp{path: p, typ: "p", mode: mode, mtime: true} }
func (e exp) own(uid, gid int) exp    { e.uid, e.gid = uid, gid; return e }
func (e exp) x(k, v string) exp {
	e.xattrs = append(append([]string(nil), e.xattrs...), k+"="+v)
	return e
}

func (e exp) line() string {
	s := fmt.Sprintf("%s %s %04o %d:%d", e.path, e.typ, e.mode, e.uid, e.gid)
	if e.extra != "" {
		s += " " + e.extra
	}
	if len(e.xattrs) > 0 {
		xs := append([]string(nil), e.xattrs...)
		sort.Strings(xs)
		s += " xattrs[" + strings.Join(xs, ",") + "]"
	}
	if e.mtime {
		s += fmt.Sprintf(" mtime=%d", t0.Unix())
	}
	return s
}

// listing is a tree described line by line, plus its hardlink groups.
type listing struct {
	lines  []string
	groups []string // each: sorted paths of one inode, joined by " = "
}

type listOpts struct {
	noMtime  bool // dir mtimes are never listed; this drops the others too
	noXattrs bool
	noDev    bool
}

// listTree walks root without following symlinks and describes every entry
// but the root: type, permission bits, owner, size and content hash, link
// target, device numbers, xattrs (overlayfs' own and selinux left out),
// mtime of non-directories, and which paths share an inode.
func listTree(t testing.TB, root string, o listOpts) listing {
	t.Helper()
	var l listing
	inodes := map[[2]uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := exp{path: rel, mode: st.Mode & 0o7777, uid: int(st.Uid), gid: int(st.Gid), mtime: false}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.typ = "d"
		case unix.S_IFREG:
			e.typ = "f"
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.extra = fmt.Sprintf("size=%d sha=%s", len(b), sha(string(b)))
		case unix.S_IFLNK:
			e.typ = "l"
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.extra = "-> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			e.typ = "c"
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				e.typ = "b"
			}
			e.extra = fmt.Sprintf("dev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case unix.S_IFIFO:
			e.typ = "p"
		default:
			e.typ = "?"
		}
		if e.typ != "d" {
			if !o.noMtime {
				if st.Mtim.Sec != t0.Unix() {
					e.extra += fmt.Sprintf(" BADMTIME=%d", st.Mtim.Sec)
				}
				e.mtime = true
			}
			k := [2]uint64{st.Dev, st.Ino}
			inodes[k] = append(inodes[k], rel)
		}
		if o.noDev && (e.typ == "c" || e.typ == "b") {
			e.extra = ""
		}
		if !o.noXattrs {
			xs, err := listXattrs(p)
			if err != nil {
				return err
			}
			for k, v := range xs {
				if strings.HasPrefix(k, "trusted.overlay.") || k == "security.selinux" {
					continue
				}
				e.xattrs = append(e.xattrs, k+"="+string(v))
			}
		}
		l.lines = append(l.lines, e.line())
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", root, err)
	}
	for _, ps := range inodes {
		if len(ps) > 1 {
			sort.Strings(ps)
			l.groups = append(l.groups, strings.Join(ps, " = "))
		}
	}
	sort.Strings(l.lines)
	sort.Strings(l.groups)
	return l
}

func expectListing(exps []exp, groups ...[]string) listing {
	var l listing
	for _, e := range exps {
		l.lines = append(l.lines, e.line())
	}
	for _, g := range groups {
		g = append([]string(nil), g...)
		sort.Strings(g)
		l.groups = append(l.groups, strings.Join(g, " = "))
	}
	sort.Strings(l.lines)
	sort.Strings(l.groups)
	return l
}

func diffListing(t testing.TB, what string, got, want listing) {
	t.Helper()
	g := strings.Join(got.lines, "\n") + "\nGROUPS\n" + strings.Join(got.groups, "\n")
	w := strings.Join(want.lines, "\n") + "\nGROUPS\n" + strings.Join(want.groups, "\n")
	if g == w {
		return
	}
	gs, ws := map[string]bool{}, map[string]bool{}
	for _, s := range strings.Split(g, "\n") {
		gs[s] = true
	}
	for _, s := range strings.Split(w, "\n") {
		ws[s] = true
	}
	var b strings.Builder
	for _, s := range strings.Split(w, "\n") {
		if !gs[s] {
			fmt.Fprintf(&b, "  missing: %s\n", s)
		}
	}
	for _, s := range strings.Split(g, "\n") {
		if !ws[s] {
			fmt.Fprintf(&b, "  extra:   %s\n", s)
		}
	}
	t.Errorf("%s differs:\n%s", what, b.String())
}

// mountPath is MountAt onto the directory target.
func mountPath(target string, lowers []string, upper, work string, readonly bool) error {
	fd, err := unix.Open(target, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return MountAt(fd, lowers, upper, work, readonly)
}

// mountStack mounts the layer dirs (bottom first) read-only with overlayfs
// and returns the mountpoint; it is unmounted when the test ends.
func mountStack(t *testing.T, bottomFirst []string) string {
	t.Helper()
	top := make([]string, len(bottomFirst))
	for i, d := range bottomFirst {
		top[len(top)-1-i] = d
	}
	mnt := t.TempDir()
	if err := mountPath(mnt, top, "", "", true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Unmount(mnt); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return mnt
}

func sha256Digest(b []byte) digest.Digest { return digest.FromBytes(b) }
