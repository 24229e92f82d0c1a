package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/casfs/casfs/internal/testenv"
)

// runBare runs casfs without --root, in dir, with CASFS_ROOT set to root:
// the shape in which a mistyped command used to become a mount.
func runBare(t *testing.T, dir, root string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binFor(args), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CASFS_ROOT="+root)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("casfs %v: %v", args, err)
	}
	return result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// TestCLIUnknownCommandsCreateNothing: only the mount-helper call shape
// mounts; a mistyped or unknown two-word command is "unknown command",
// exit 2, and leaves nothing behind.
func TestCLIUnknownCommandsCreateNothing(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	cwd := filepath.Join(work, "cwd")
	root := filepath.Join(work, "root")
	mnt := filepath.Join(work, "mnt")
	for _, d := range []string{cwd, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"pull", "busybox"},
		{"imgae", mnt},
		{"foo", "bar"},
		{"imgae", "ls"},
	} {
		r := runBare(t, cwd, root, args...)
		if r.Code != 2 || !strings.Contains(r.Stderr, `unknown command "`+args[0]+`"`) {
			t.Errorf("casfs %v: exit %d, stderr %q; want exit 2, unknown command", args, r.Code, r.Stderr)
		}
	}
	// Commands that exist never mount either, whatever they print.
	for _, args := range [][]string{{"images", "ls"}, {"completion", "bash"}, {"help", "image"}} {
		runBare(t, cwd, root, args...)
	}
	if ents, _ := os.ReadDir(cwd); len(ents) != 0 {
		t.Errorf("commands created %v in the working directory", ents)
	}
	if ents, _ := os.ReadDir(mnt); len(ents) != 0 || mounted(mnt, "fuse.casfs") {
		t.Errorf("the mountpoint was mounted or written: %v", ents)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("store root created: %v", err)
	}
}

// TestCLIMountHelperStoreRoot: SOURCE MOUNTPOINT without -o mounts when
// SOURCE is an existing store, and a relative mountpoint is taken from the
// working directory.
func TestCLIMountHelperStoreRoot(t *testing.T) {
	testenv.RequireFUSE(t)
	t.Parallel()
	c := newCLI(t)
	d := strings.TrimSpace(c.OK(strings.NewReader("helper"), "content", "ingest", "-q", "h"))
	work := t.TempDir()
	mnt := filepath.Join(work, "mnt")
	os.Mkdir(mnt, 0o755)
	r := runBare(t, work, "/nonexistent", c.Root, "mnt")
	t.Cleanup(func() { unmount(t, mnt) })
	if r.Code != 0 {
		ents, _ := os.ReadDir(c.Root)
		t.Fatalf("casfs ROOT mnt: exit %d: %s %v", r.Code, r.Stderr, ents)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
	if err != nil || string(b) != "helper" {
		t.Fatalf("read through the mount: %q %v", b, err)
	}
}

// TestCLIMountRefusals: a relative mountpoint is the working directory's;
// a mountpoint already holding a casfs mount and a root that does not
// exist are refused with a clear message, creating nothing.
func TestCLIMountRefusals(t *testing.T) {
	testenv.RequireFUSE(t)
	t.Parallel()
	c := newCLI(t)
	c.OK(strings.NewReader("x"), "content", "ingest", "-q", "x")
	work := t.TempDir()
	mnt := filepath.Join(work, "mnt")
	os.Mkdir(mnt, 0o755)
	cmd := c.command(nil, "mount", "-d", "mnt")
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount -d mnt (relative): %v: %s", err, out)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	if !mounted(mnt, "fuse.casfs") {
		t.Fatalf("relative mountpoint not mounted at %s", mnt)
	}

	// statfs of the mount is the store filesystem's (df, getconf NAME_MAX).
	var got, want syscall.Statfs_t
	if err := syscall.Statfs(mnt, &got); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Statfs(c.Root, &want); err != nil {
		t.Fatal(err)
	}
	if got.Blocks == 0 || got.Blocks != want.Blocks || got.Namelen != want.Namelen || got.Files != want.Files {
		t.Errorf("statfs of the mount: blocks %d namelen %d files %d; the store's filesystem: %d %d %d",
			got.Blocks, got.Namelen, got.Files, want.Blocks, want.Namelen, want.Files)
	}

	other := newCLI(t)
	other.OK(strings.NewReader("y"), "content", "ingest", "-q", "y")
	other.Fail(1, nil, []string{"mount", "-d", mnt}, mnt, "already mounted there")

	missing := filepath.Join(work, "typo")
	free := filepath.Join(work, "free")
	os.Mkdir(free, 0o755)
	bad := &cli{t: t, Root: missing}
	bad.Fail(1, nil, []string{"mount", "-d", free}, missing, "does not exist")
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a mistyped --root was created: %v", err)
	}
}

// TestCLIArgumentsAndStreams: flags may follow arguments; pull -q prints
// the name and nothing else; progress goes to stderr, results to stdout;
// image rm checks every argument before removing any; image tag prints
// normalised names and moves an existing one only with --force.
func TestCLIArgumentsAndStreams(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := gcTestImage(t, "a", "b")
	ref := pushTestImage(t, reg, "lab/cli", "1", img)
	other := pushTestImage(t, reg, "lab/other", "1", gcTestImage(t, "c"))
	c := newCLI(t)

	// Flags after the reference; -q prints the name only, nothing on stderr.
	r := c.Run(nil, "image", "pull", ref, "--plain-http", "-q")
	if r.Code != 0 || r.Stdout != ref+"\n" || r.Stderr != "" {
		t.Fatalf("pull REF --plain-http -q: exit %d, stdout %q, stderr %q; want only %q on stdout", r.Code, r.Stdout, r.Stderr, ref)
	}
	// Without -q: the result on stdout, progress on stderr.
	r = c.Run(nil, "image", "pull", other, "--plain-http")
	if r.Code != 0 || r.Stdout != other+": "+imageDigest(t, c, other)+"\n" || !strings.Contains(r.Stderr, "total:") {
		t.Fatalf("pull: want one result line on stdout and progress on stderr:\nstdout: %s\nstderr: %s", r.Stdout, r.Stderr)
	}
	// content fetch of one layer by digest goes to the blob endpoint.
	fresh := newCLI(t)
	layer := img.Layers[1].Digest
	out := fresh.OK(nil, "content", "fetch", "--plain-http", "-q", reg.Host+"/lab/cli@"+layer.String())
	if out != layer.String()+"\n" {
		t.Fatalf("content fetch REF@layer printed %q, want %s", out, layer)
	}
	if got := fresh.OK(nil, "content", "get", layer.String()); got != string(img.Blobs[layer]) {
		t.Fatalf("fetched layer has the wrong bytes")
	}
	fresh.Fail(1, nil, []string{"content", "fetch", "--plain-http", reg.Host + "/lab/cli@sha256:" + strings.Repeat("1", 64)}, "not found")

	// A failed push says so once.
	authed := testenv.StartRegistry(t, testenv.RegistryOptions{Auth: true})
	r = c.Run(nil, "image", "push", "--plain-http", ref, authed.Ref("lab/denied", "1"))
	if r.Code != 1 || len(lines(r.Stderr)) != 1 || !strings.HasPrefix(r.Stderr, "casfs: push ") {
		t.Fatalf("failed push: exit %d, want 1 and one error line:\n%s", r.Code, r.Stderr)
	}
	// --debug shows each registry request, never credentials, and no
	// badger chatter.
	r = c.Run(nil, "image", "push", "--plain-http", "--debug", "--user", authed.Username+":"+authed.Password, ref, authed.Ref("lab/allowed", "1"))
	if r.Code != 0 || !strings.Contains(r.Stderr, "registry request") || !strings.Contains(r.Stderr, "method=PUT") ||
		!strings.Contains(r.Stderr, "status=201") || !strings.Contains(r.Stderr, "/v2/lab/allowed/manifests/1") {
		t.Fatalf("push --debug: exit %d, want request lines:\n%s", r.Code, r.Stderr)
	}
	for _, secret := range []string{authed.Password, "Authorization", "Basic ", "badger"} {
		if strings.Contains(r.Stderr, secret) {
			t.Fatalf("push --debug logged %q:\n%s", secret, r.Stderr)
		}
	}

	tar := filepath.Join(t.TempDir(), "x.tar")
	c.OK(nil, "image", "export", tar, ref, "--all-platforms")
	if fi, err := os.Stat(tar); err != nil || fi.Size() == 0 {
		t.Fatalf("export FILE REF --all-platforms wrote nothing: %v", err)
	}

	// Tags: normalised on output; an existing name is not moved silently.
	if out := c.OK(nil, "image", "tag", ref, "short:1"); out != "docker.io/library/short:1\n" {
		t.Fatalf("tag printed %q, want the normalised name", out)
	}
	c.Fail(1, nil, []string{"image", "tag", other, "short:1"}, "docker.io/library/short:1", "already exists", "--force")
	if got := imageDigest(t, c, "short:1"); got != img.Manifest.Digest.String() {
		t.Fatalf("refused tag moved the name to %s", got)
	}
	c.OK(nil, "image", "tag", "--force", other, "short:1")
	if got := imageDigest(t, c, "short:1"); got == img.Manifest.Digest.String() {
		t.Fatal("tag --force did not move the name")
	}

	// info takes several names (image ls -q | xargs casfs image info) and
	// --format json, and prints one object per name with .manifest.layers.
	names := lines(c.OK(nil, "image", "ls", "-q"))
	dec := json.NewDecoder(strings.NewReader(c.OK(nil, append([]string{"image", "info", "--format", "json"}, names...)...)))
	var layers []int
	for dec.More() {
		var d struct {
			Name     string `json:"name"`
			Manifest struct {
				Layers []json.RawMessage `json:"layers"`
			} `json:"manifest"`
		}
		if err := dec.Decode(&d); err != nil {
			t.Fatal(err)
		}
		layers = append(layers, len(d.Manifest.Layers))
	}
	if len(layers) != 3 || layers[0] != 2 || layers[1] != 1 {
		t.Fatalf("image info of %q: layer counts %v, want 2 1 1", names, layers)
	}
	c.Fail(2, nil, []string{"image", "info", "--format", "table", ref}, "json only")
	c.OK(nil, "content", "info", "--format", "json", img.Layers[0].Digest.String(), img.Layers[1].Digest.String())

	// rm checks every argument first: a bad flag or an unknown name
	// removes nothing.
	c.Fail(2, nil, []string{"image", "rm", ref, "short:1", "-f"}, "flag provided but not defined: -f")
	c.Fail(1, nil, []string{"image", "rm", ref, "nope:1"}, "docker.io/library/nope:1", "not found")
	if got := lines(c.OK(nil, "image", "ls", "-q")); len(got) != 3 {
		t.Fatalf("a refused rm removed names: %q", got)
	}
	c.OK(nil, "image", "rm", ref, "short:1")
	if got := lines(c.OK(nil, "images", "list", "-q")); len(got) != 1 || got[0] != other {
		t.Fatalf("after rm: %q, want only %s", got, other)
	}
}

func imageDigest(t *testing.T, c *cli, ref string) string {
	t.Helper()
	var d struct {
		Target struct{ Digest string } `json:"target"`
	}
	if err := json.Unmarshal([]byte(c.OK(nil, "image", "info", ref)), &d); err != nil {
		t.Fatal(err)
	}
	return d.Target.Digest
}

// TestCLIHelpVersionCompletionTerminal: help, version and completion
// scripts work; an archive is never written to a terminal.
func TestCLIHelpVersionCompletionTerminal(t *testing.T) {
	testenv.Require(t, "script")
	t.Parallel()
	c := newCLI(t)
	c.OK(strings.NewReader("x"), "content", "ingest", "-q", "x")
	if out := c.OK(nil, "version"); !strings.HasPrefix(out, "casfs ") {
		t.Errorf("version printed %q", out)
	}
	if out := c.OK(nil, "--version"); !strings.HasPrefix(out, "casfs version ") {
		t.Errorf("--version printed %q", out)
	}
	if out := c.OK(nil, "help", "image"); !strings.Contains(out, "pull") || !strings.Contains(out, "export") {
		t.Errorf("help image lacks the subcommands:\n%s", out)
	}
	for sh, want := range map[string]string{"bash": "complete -o bashdefault -o default -F _casfs casfs", "zsh": "compdef _casfs casfs", "fish": "complete -c casfs"} {
		if out := c.OK(nil, "completion", sh); !strings.Contains(out, want) {
			t.Errorf("completion %s lacks %q", sh, want)
		}
	}
	c.Fail(2, nil, []string{"completion", "tcsh"}, `unknown shell "tcsh"`)
	if out := c.OK(nil, "image", "--generate-bash-completion"); !strings.Contains(out, "pull\n") {
		t.Errorf("completion candidates for image lack pull:\n%s", out)
	}

	// A terminal on stdout: refused (exit 2), nothing written.
	for _, args := range []string{"content export -", "image export - x:1", "save x:1"} {
		cmd := exec.Command("script", "-qec", casfsBin+" --root "+c.Root+" "+args, "/dev/null")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "refusing to write a tar archive to a terminal") {
			t.Errorf("%s on a terminal: %v\n%s", args, err, out)
		}
	}
}

// Progress in a pseudo-terminal: without a window size (script with no
// terminal around it) it prints lines; with one it draws bars. Both show
// sizes as "N B" / "N.N KiB", and bars show an ETA.
func TestCLIProgressInPty(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "script")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := gcTestImage(t, "pty")
	ref := pushTestImage(t, reg, "lab/pty", "1", img)
	run := func(c *cli, shell string) string {
		t.Helper()
		cmd := exec.Command("script", "-qec", shell+casfsBin+" --root "+c.Root+" image pull --plain-http --no-unpack "+ref, "/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pull in a pty: %v\n%s", err, out)
		}
		return string(out)
	}
	manifest := img.Manifest.Digest
	lines := run(newCLI(t), "")
	want := "sha256:" + manifest.Encoded()[:12] + " done " + strconv.Itoa(len(img.Blobs[manifest])) + " B"
	if !strings.Contains(lines, want) || !strings.Contains(lines, "total: ") {
		t.Fatalf("pty without a window size: want the line %q and a total:\n%s", want, lines)
	}
	bars := run(newCLI(t), "stty cols 120 rows 40; ")
	if !strings.Contains(bars, " B / ") || strings.Contains(bars, " b ") || !strings.Contains(bars, "/s") {
		t.Fatalf("bars in a pty with a window size: want sizes as N B and a rate:\n%q", bars)
	}
}

// TestImageInfoPlatform: image info --platform P of an index shows that
// platform's manifest and config; a platform the index lacks fails with
// exit 1 and one line that lists the platforms it has.
func TestImageInfoPlatform(t *testing.T) {
	t.Parallel()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	idx := multiPlatformImage(t)
	ref := pushIndex(t, reg, "lab/platforms", "1", idx)
	c := newCLI(t)
	c.OK(nil, "image", "pull", "-q", "--plain-http", "--no-unpack", "--all-platforms", ref)

	for _, img := range idx.Images {
		p := img.Manifest.Platform.OS + "/" + img.Manifest.Platform.Architecture
		var d struct {
			Target   struct{ Digest string } `json:"target"`
			Manifest struct {
				Config struct{ Digest string } `json:"config"`
			} `json:"manifest"`
			Config struct {
				Architecture string `json:"architecture"`
			} `json:"config"`
		}
		if err := json.Unmarshal([]byte(c.OK(nil, "image", "info", "--platform", p, ref)), &d); err != nil {
			t.Fatal(err)
		}
		if d.Target.Digest != idx.Desc.Digest.String() || d.Manifest.Config.Digest != img.Config.Digest.String() || d.Config.Architecture != img.Manifest.Platform.Architecture {
			t.Fatalf("image info --platform %s: target %s, config %s (%s); want %s, %s (%s)", p, d.Target.Digest,
				d.Manifest.Config.Digest, d.Config.Architecture, idx.Desc.Digest, img.Config.Digest, img.Manifest.Platform.Architecture)
		}
	}
	r := c.Fail(1, nil, []string{"image", "info", "--platform", "linux/s390x", ref}, "linux/s390x", "linux/amd64, linux/arm64")
	if r.Stdout != "" {
		t.Fatalf("image info of an absent platform printed:\n%s", r.Stdout)
	}
	c.Fail(2, nil, []string{"image", "info", "--platform", "linux/", ref})
}
