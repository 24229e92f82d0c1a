package layers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// applyStack applies each layer (bottom first) into its own directory, with
// the directories below as Lowers, and returns the directories.
func applyStack(t *testing.T, layers [][]tent) []string {
	t.Helper()
	base := t.TempDir()
	var dirs []string
	for i, ents := range layers {
		d := filepath.Join(base, string(rune('a'+i)))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		var lowers []string
		for j := len(dirs) - 1; j >= 0; j-- {
			lowers = append(lowers, dirs[j])
		}
		blob := mkTar(t, ents...)
		res, err := Apply(context.Background(), d, bytes.NewReader(blob), ApplyOptions{Lowers: lowers})
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if want := digest.FromBytes(blob); res.DiffID != want || res.Size != int64(len(blob)) || res.Entries != int64(len(ents)) {
			t.Fatalf("layer %d: result %+v, want diff id %s size %d entries %d", i, res, want, len(blob), len(ents))
		}
		dirs = append(dirs, d)
	}
	return dirs
}

// aclOwnerOnly is a default ACL in its xattr encoding (version 2, then
// tag, permissions and id of each entry): owner rw-, group and other ---.
const aclOwnerOnly = "\x02\x00\x00\x00" +
	"\x01\x00\x06\x00\xff\xff\xff\xff" +
	"\x04\x00\x00\x00\xff\xff\xff\xff" +
	"\x20\x00\x00\x00\xff\xff\xff\xff"

var longName = strings.Repeat("long-directory-name-", 6) + "/" + strings.Repeat("x", 200) + ".txt"

func TestApplyMergedView(t *testing.T) {
	requireRoot(t)
	const capV1 = "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" // cap_net_bind_service permitted
	tOld := t0.Add(-time.Hour)
	cases := []struct {
		name   string
		layers [][]tent
		want   []exp
		groups [][]string
	}{{
		name: "one layer of every kind",
		layers: [][]tent{{
			tDir("bin", 0o755), tFile("bin/sh", 0o755, "#!shell"),
			tFile("bin/su", 0o4755, "setuid").own(0, 0),
			tFile("bin/wall", 0o2755, "setgid").own(0, 5),
			tFile("bin/ping", 0o755, "ping").x("security.capability", capV1).x("user.note", "hi"),
			tDir("tmp", 0o1777),
			tDir("home/u", 0o700).own(1000, 1000), tFile("home/u/f", 0o640, "mine").own(1000, 1001),
			tSym("home/rel", "u/f"), tSym("home/abs", "/etc/passwd"), tSym("home/dangling", "../nowhere/at/all"),
			tChar("dev/null", 1, 3), tBlock("dev/loop0", 7, 0), tFifo("dev/fifo"),
			tHard("bin/sh2", "bin/sh"), tHard("bin/sh3", "/bin/sh"),
			tFile(longName, 0o644, "long"), tFile("ünïcødé/文件 with space", 0o644, "utf8"),
			tFile("/abs/file", 0o600, "abs"), tFile("./dot/file", 0o644, "dot"),
		}},
		want: []exp{
			eDir("bin", 0o755), eFile("bin/sh", 0o755, "#!shell"), eFile("bin/sh2", 0o755, "#!shell"), eFile("bin/sh3", 0o755, "#!shell"),
			eFile("bin/su", 0o4755, "setuid"), eFile("bin/wall", 0o2755, "setgid").own(0, 5),
			eFile("bin/ping", 0o755, "ping").x("security.capability", capV1).x("user.note", "hi"),
			eDir("tmp", 0o1777),
			eDir("home", 0o755), eDir("home/u", 0o700).own(1000, 1000), eFile("home/u/f", 0o640, "mine").own(1000, 1001),
			eSym("home/rel", "u/f"), eSym("home/abs", "/etc/passwd"), eSym("home/dangling", "../nowhere/at/all"),
			eDir("dev", 0o755), eChar("dev/null", 0o666, 1, 3), eBlock("dev/loop0", 0o660, 7, 0), eFifo("dev/fifo", 0o644),
			eDir(filepath.Dir(longName), 0o755), eFile(longName, 0o644, "long"),
			eDir("ünïcødé", 0o755), eFile("ünïcødé/文件 with space", 0o644, "utf8"),
			eDir("abs", 0o755), eFile("abs/file", 0o600, "abs"), eDir("dot", 0o755), eFile("dot/file", 0o644, "dot"),
		},
		groups: [][]string{{"bin/sh", "bin/sh2", "bin/sh3"}},
	}, {
		// A create gives a file the process's owner (or a setgid
		// directory's group) and the mode less the umask: where that is
		// not what the entry says, the entry still wins.
		name: "owners and modes a create alone would get wrong",
		layers: [][]tent{{
			tDir("g", 0o2755).own(0, 50), tFile("g/root", 0o644, "r"), tFile("g/staff", 0o644, "s").own(0, 50),
			tDir("h", 0o755), tFile("h/before", 0o644, "b"), tDir("h", 0o2775).own(0, 60), tFile("h/after", 0o644, "a"),
			tFile("m/open", 0o666, "o"), tFile("m/none", 0o000, "n"), tFile("m/ro", 0o444, "ro"), tFile("m/sticky", 0o1755, "t"),
			tFile("m/user", 0o755, "u").own(1000, 0),
		}},
		want: []exp{
			eDir("g", 0o2755).own(0, 50), eFile("g/root", 0o644, "r"), eFile("g/staff", 0o644, "s").own(0, 50),
			eDir("h", 0o2775).own(0, 60), eFile("h/before", 0o644, "b"), eFile("h/after", 0o644, "a"),
			eDir("m", 0o755), eFile("m/open", 0o666, "o"), eFile("m/none", 0o000, "n"), eFile("m/ro", 0o444, "ro"),
			eFile("m/sticky", 0o1755, "t"), eFile("m/user", 0o755, "u").own(1000, 0),
		},
	}, {
		// Under a default ACL the ACL, not the umask, masks a created
		// file's mode (here to owner-only): the entry's mode still wins.
		name: "modes under a default ACL",
		layers: [][]tent{{
			tDir("acl", 0o755).x("system.posix_acl_default", aclOwnerOnly), tFile("acl/f", 0o644, "f"),
		}},
		want: []exp{eDir("acl", 0o755).x("system.posix_acl_default", aclOwnerOnly), eFile("acl/f", 0o644, "f")},
	}, {
		name: "whiteouts delete files and directories below",
		layers: [][]tent{
			{tDir("a", 0o755), tFile("a/x", 0o644, "x"), tFile("a/y", 0o644, "y"), tFile("b", 0o644, "b"), tDir("c", 0o755), tFile("c/z", 0o644, "z")},
			{tWh("a/x"), tWh("b"), tWh("c"), tWh("never-existed")},
		},
		want: []exp{eDir("a", 0o755), eFile("a/y", 0o644, "y")},
	}, {
		name: "opaque directory keeps this layer's children, marker last",
		layers: [][]tent{
			{tDir("d", 0o755), tFile("d/x", 0o644, "x"), tDir("d/sub", 0o755), tFile("d/sub/y", 0o644, "y"), tFile("keep", 0o644, "k")},
			{tDir("d", 0o750), tFile("d/new", 0o644, "new"), tOpq("d")},
		},
		want: []exp{eDir("d", 0o750), eFile("d/new", 0o644, "new"), eFile("keep", 0o644, "k")},
	}, {
		name: "opaque directory without its own entry, marker first",
		layers: [][]tent{
			{tDir("d", 0o700).own(7, 7), tFile("d/x", 0o644, "x")},
			{tOpq("d"), tFile("d/new", 0o644, "new")},
		},
		want: []exp{eDir("d", 0o700).own(7, 7), eFile("d/new", 0o644, "new")},
	}, {
		name: "delete and re-create, whiteout first",
		layers: [][]tent{
			{tDir("p", 0o755), tFile("p/old", 0o644, "old"), tFile("q", 0o644, "old q")},
			{tWh("p"), tDir("p", 0o711), tFile("p/new", 0o644, "new"), tWh("q"), tFile("q", 0o600, "new q")},
		},
		want: []exp{eDir("p", 0o711), eFile("p/new", 0o644, "new"), eFile("q", 0o600, "new q")},
	}, {
		name: "delete and re-create, whiteout last, directory implicit",
		layers: [][]tent{
			{tDir("p", 0o700).own(3, 3), tFile("p/old", 0o644, "old"), tFile("q", 0o644, "old q")},
			{tFile("p/new", 0o644, "new"), tFile("q", 0o600, "new q"), tWh("p"), tWh("q")},
		},
		want: []exp{eDir("p", 0o755), eFile("p/new", 0o644, "new"), eFile("q", 0o600, "new q")},
	}, {
		name: "replacements within a layer and across layers",
		layers: [][]tent{
			{tDir("t", 0o755), tFile("t/x", 0o644, "x"), tFile("u", 0o644, "u")},
			{
				tDir("r", 0o755), tFile("r/x", 0o644, "x"), tFile("r", 0o644, "r is a file now"),
				tFile("s", 0o644, "s"), tDir("s", 0o755), tFile("s/y", 0o644, "y"),
				tSym("v", "u"), tFile("v", 0o644, "v replaced its symlink"),
				tFile("t", 0o644, "t over a dir"), tDir("u", 0o755), tFile("u/v", 0o644, "v"),
			},
		},
		want: []exp{
			eFile("r", 0o644, "r is a file now"), eDir("s", 0o755), eFile("s/y", 0o644, "y"),
			eFile("v", 0o644, "v replaced its symlink"),
			eFile("t", 0o644, "t over a dir"), eDir("u", 0o755), eFile("u/v", 0o644, "v"),
		},
	}, {
		// The applier keeps the last entry's directory open: entries
		// after a replaced directory land in the new one.
		name: "a directory replaced twice within a layer while its files are written",
		layers: [][]tent{{
			tDir("d", 0o755), tFile("d/a", 0o644, "a"), tFile("d", 0o600, "d is a file"),
			tDir("d", 0o750), tFile("d/b", 0o644, "b"), tDir("d/e", 0o755), tFile("d/e/c", 0o644, "c"),
			tSym("d/e", "elsewhere"), tFile("d/f", 0o644, "f"),
		}},
		want: []exp{eDir("d", 0o750), eFile("d/b", 0o644, "b"), eSym("d/e", "elsewhere"), eFile("d/f", 0o644, "f")},
	}, {
		name: "a non-directory then a directory of the same name hides the lower directory",
		layers: [][]tent{
			{tDir("bin", 0o755), tFile("bin/old", 0o644, "old")},
			{tSym("bin", "usr/bin"), tDir("bin", 0o700), tFile("bin/new", 0o644, "new")},
		},
		want: []exp{eDir("bin", 0o700), eFile("bin/new", 0o644, "new")},
	}, {
		name: "whiteouts inside a directory this layer made opaque",
		layers: [][]tent{
			{tDir("d", 0o755), tFile("d/x", 0o644, "x"), tFile("d/y", 0o644, "y"), tDir("e", 0o755), tFile("e/x", 0o644, "x")},
			{tOpq("d"), tWh("d/x"), tFile("d/z", 0o644, "z"), tWh("e"), tDir("e", 0o755), tWh("e/x"), tWh("e/sub/deeper")},
		},
		want: []exp{eDir("d", 0o755), eFile("d/z", 0o644, "z"), eDir("e", 0o755)},
	}, {
		name: "paths through a lower layer's symlinks land at the targets, inside the root",
		layers: [][]tent{
			{tDir("usr", 0o755), tDir("usr/lib", 0o700), tFile("usr/lib/old", 0o644, "old"),
				tSym("lib", "usr/lib"), tSym("abs", "/usr/lib"), tSym("up", "../../../usr"), tSym("chain", "lib")},
			{tFile("lib/x", 0o644, "x"), tFile("abs/y", 0o644, "y"), tFile("up/lib/z", 0o644, "z"), tFile("chain/w", 0o644, "w"),
				tHard("lib/xl", "chain/x"), tWh("lib/old")},
		},
		want: []exp{
			eDir("usr", 0o755), eDir("usr/lib", 0o700), eFile("usr/lib/x", 0o644, "x"), eFile("usr/lib/y", 0o644, "y"),
			eFile("usr/lib/z", 0o644, "z"), eFile("usr/lib/w", 0o644, "w"), eFile("usr/lib/xl", 0o644, "x"),
			eSym("lib", "usr/lib"), eSym("abs", "/usr/lib"), eSym("up", "../../../usr"), eSym("chain", "lib"),
		},
		groups: [][]string{{"usr/lib/x", "usr/lib/xl"}},
	}, {
		name: "hardlinks to a lower layer are copied up",
		layers: [][]tent{
			{tDir("bin", 0o755), tFile("bin/tool", 0o4750, "tool").own(0, 9).x("security.capability", capV1), tSym("bin/link", "tool")},
			{tHard("bin/tool2", "bin/tool"), tHard("bin/tool3", "bin/tool"), tHard("sbin/link2", "bin/link")},
		},
		want: []exp{
			eDir("bin", 0o755), eFile("bin/tool", 0o4750, "tool").own(0, 9).x("security.capability", capV1), eSym("bin/link", "tool"),
			eFile("bin/tool2", 0o4750, "tool").own(0, 9).x("security.capability", capV1),
			eFile("bin/tool3", 0o4750, "tool").own(0, 9).x("security.capability", capV1),
			eDir("sbin", 0o755), eSym("sbin/link2", "tool"),
		},
		groups: [][]string{{"bin/tool", "bin/tool2", "bin/tool3"}, {"bin/link", "sbin/link2"}},
	}, {
		name: "hardlink to a lower file that this layer deletes (a rename)",
		layers: [][]tent{
			{tDir("a", 0o755), tFile("a/f", 0o640, "f").own(2, 2), tFile("a/g", 0o644, "g")},
			{tWh("a/g"), tHard("b", "a/f"), tHard("c", "a/g"), tWh("a/f")},
		},
		want:   []exp{eDir("a", 0o755), eFile("b", 0o640, "f").own(2, 2), eFile("c", 0o644, "g")},
		groups: [][]string{},
	}, {
		name: "implicit parents take the lower directory's attributes",
		layers: [][]tent{
			{tDir("tmp", 0o1777), tDir("home", 0o750).own(1, 2), tDir("home/x", 0o700).own(5, 5)},
			{tFile("tmp/f", 0o644, "f"), tFile("home/x/y/z", 0o644, "z")},
		},
		want: []exp{
			eDir("tmp", 0o1777), eFile("tmp/f", 0o644, "f"),
			eDir("home", 0o750).own(1, 2), eDir("home/x", 0o700).own(5, 5), eDir("home/x/y", 0o755), eFile("home/x/y/z", 0o644, "z"),
		},
	}, {
		name: "whiteout of a parent, then a child re-creates it",
		layers: [][]tent{
			{tDir("a", 0o700), tDir("a/b", 0o755), tFile("a/b/c", 0o644, "c")},
			{tWh("a"), tFile("a/b2", 0o644, "b2")},
		},
		want: []exp{eDir("a", 0o755), eFile("a/b2", 0o644, "b2")},
	}, {
		name: "opaque root hides every lower entry",
		layers: [][]tent{
			{tFile("x", 0o644, "x"), tDir("y", 0o755), tFile("y/in", 0o644, "in")},
			{tFile("w", 0o644, "w")},
			{tOpq("."), tFile("z", 0o644, "z"), tDir("y", 0o700), tFile("y/mine", 0o644, "mine")},
		},
		want: []exp{eFile("z", 0o644, "z"), eDir("y", 0o700), eFile("y/mine", 0o644, "mine")},
	}, {
		name: "three layers: delete, re-add, delete again",
		layers: [][]tent{
			{tDir("etc", 0o755), tFile("etc/conf", 0o644, "v1"), tFile("etc/other", 0o644, "o")},
			{tWh("etc/conf")},
			{tFile("etc/conf", 0o600, "v3")},
			{tWh("etc/other"), tFile("etc/new", 0o644, "n")},
		},
		want: []exp{eDir("etc", 0o755), eFile("etc/conf", 0o600, "v3"), eFile("etc/new", 0o644, "n")},
	}, {
		name: "directory mtimes are set after their children",
		layers: [][]tent{{
			tDir("m", 0o755).mtime(tOld), tFile("m/a", 0o644, "a"), tDir("m/n", 0o755).mtime(tOld), tFile("m/n/b", 0o644, "b"),
		}},
		want: []exp{eDir("m", 0o755), eFile("m/a", 0o644, "a"), eDir("m/n", 0o755), eFile("m/n/b", 0o644, "b")},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dirs := applyStack(t, tc.layers)
			mnt := mountStack(t, dirs)
			got := listTree(t, mnt, listOpts{})
			diffListing(t, "merged tree", got, expectListing(tc.want, tc.groups...))
			if tc.name == "directory mtimes are set after their children" {
				for _, d := range []string{"m", "m/n"} {
					fi, err := os.Lstat(filepath.Join(mnt, d))
					if err != nil || !fi.ModTime().Equal(tOld) {
						t.Errorf("%s mtime: %v %v, want %v", d, fi.ModTime(), err, tOld)
					}
				}
			}
		})
	}
}

// The layer directory itself holds overlayfs' encoding.
func TestApplyOverlayEncoding(t *testing.T) {
	requireRoot(t)
	dirs := applyStack(t, [][]tent{
		{tDir("d", 0o755), tFile("d/x", 0o644, "x"), tFile("gone", 0o644, "g")},
		{tWh("gone"), tOpq("d")},
	})
	top := dirs[1]
	fi, err := os.Lstat(filepath.Join(top, "gone"))
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("whiteout: %v %v", fi, err)
	}
	if !isOpaqueDir(filepath.Join(top, "d")) {
		t.Error("d is not opaque in the upper layer")
	}
	if isOpaqueDir(filepath.Join(dirs[0], "d")) {
		t.Error("d is opaque in the lower layer")
	}
}

func TestApplyDiffIDCoversTrailingBytes(t *testing.T) {
	requireRoot(t)
	blob := append(mkTar(t, tFile("a", 0o644, "a")), make([]byte, 4096)...)
	blob = append(blob, "trailing junk"...)
	res, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(blob), ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(blob); res.DiffID != digest.NewDigestFromBytes(digest.SHA256, want[:]) || res.Size != int64(len(blob)) {
		t.Fatalf("got %s size %d, want sha256 of all %d bytes", res.DiffID, res.Size, len(blob))
	}
}

// TestApplySkipsEStargzMetadata: the eStargz metadata entries at a layer's
// root (its TOC and prefetch landmarks) are not part of the image's tree, so
// an unpacked layer lacks them as its lazily served tree does; the same
// names deeper down are ordinary files.
func TestApplySkipsEStargzMetadata(t *testing.T) {
	t.Parallel()
	dirs := applyStack(t, [][]tent{{
		tFile("a", 0o644, "a"),
		tFile(".prefetch.landmark", 0o644, "\x00"),
		tFile(".no.prefetch.landmark", 0o644, "\x00"),
		tDir("sub", 0o755),
		tFile("sub/stargz.index.json", 0o644, "{}"),
		tFile("stargz.index.json", 0o644, `{"version":1}`),
	}})
	var names []string
	filepath.WalkDir(dirs[0], func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dirs[0], p)
		names = append(names, rel)
		return nil
	})
	if got, want := strings.Join(names, " "), ". a sub sub/stargz.index.json"; got != want {
		t.Fatalf("unpacked tree %q, want %q", got, want)
	}
}
