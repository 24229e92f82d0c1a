package integration

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func sha(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

func TestContentLifecycle(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	data := []byte("hello, casfs\n")
	d := sha(data)
	if got := strings.TrimSpace(c.OK(bytes.NewReader(data), "content", "ingest", "greeting")); got != d {
		t.Fatalf("ingest printed %q, want %q", got, d)
	}
	other := []byte("second blob")
	d2 := strings.TrimSpace(c.OK(bytes.NewReader(other), "content", "ingest", "--expected-digest", sha(other), "--expected-size", "11", "second"))
	if d2 != sha(other) {
		t.Fatalf("ingest with expectations printed %q", d2)
	}

	// The blob file is immutable and named by its digest.
	fi, err := os.Stat(filepath.Join(c.Root, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
	if err != nil || fi.Mode().Perm() != 0o444 || fi.Size() != int64(len(data)) {
		t.Fatalf("blob file: %v %v", fi, err)
	}

	ls := lines(c.OK(nil, "content", "ls"))
	if len(ls) != 3 || !strings.HasPrefix(ls[0], "DIGEST") {
		t.Fatalf("ls: %q", ls)
	}
	if !strings.Contains(c.OK(nil, "content", "ls"), d+"  13 B") {
		t.Errorf("ls does not show %s with its size:\n%s", d, strings.Join(ls, "\n"))
	}
	q := lines(c.OK(nil, "content", "ls", "-q"))
	want := []string{d, d2}
	if d2 < d {
		want = []string{d2, d}
	}
	if strings.Join(q, ",") != strings.Join(want, ",") {
		t.Fatalf("ls -q = %q, want %q (sorted by digest)", q, want)
	}
	var infos []struct {
		Digest string `json:"digest"`
		Size   int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(c.OK(nil, "content", "ls", "--format", "json")), &infos); err != nil || len(infos) != 2 {
		t.Fatalf("ls --format json: %v %v", infos, err)
	}

	// Digests as users type them: full, or a unique prefix of 12+ hex.
	prefix := strings.TrimPrefix(d, "sha256:")[:12]
	var info struct {
		Digest string            `json:"digest"`
		Size   int64             `json:"size"`
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(c.OK(nil, "content", "info", prefix)), &info); err != nil || info.Digest != d || info.Size != 13 {
		t.Fatalf("info %s: %+v %v", prefix, info, err)
	}
	if got := c.OK(nil, "content", "get", d); got != string(data) {
		t.Fatalf("get = %q", got)
	}

	if got := strings.TrimSpace(c.OK(nil, "content", "label", d, "b=2", "a=1")); got != "a=1,b=2" {
		t.Fatalf("label set printed %q", got)
	}
	if got := strings.TrimSpace(c.OK(nil, "content", "label", d, "a-")); got != "b=2" {
		t.Fatalf("label remove printed %q", got)
	}
	json.Unmarshal([]byte(c.OK(nil, "content", "info", d)), &info)
	if len(info.Labels) != 1 || info.Labels["b"] != "2" {
		t.Fatalf("labels after edit: %v", info.Labels)
	}

	c.OK(nil, "content", "verify")
	c.OK(nil, "content", "verify", d)

	// Export all, remove all, import back.
	archive := filepath.Join(t.TempDir(), "blobs.tar")
	c.OK(nil, "content", "export", archive)
	assertTarNames(t, archive, "blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), "blobs/sha256/"+strings.TrimPrefix(d2, "sha256:"))
	if got := lines(c.OK(nil, "content", "rm", d, d2)); len(got) != 2 {
		t.Fatalf("rm printed %q", got)
	}
	if got := c.OK(nil, "content", "ls", "-q"); got != "" {
		t.Fatalf("ls after rm: %q", got)
	}
	c.Fail(1, nil, []string{"content", "rm", d}, "not found", d)
	imported := lines(c.OK(nil, "content", "import", archive))
	if len(imported) != 2 {
		t.Fatalf("import printed %q", imported)
	}
	if got := c.OK(nil, "content", "get", d2); got != string(other) {
		t.Fatalf("get after import = %q", got)
	}

	// Export of named blobs to stdout.
	out := c.OK(nil, "content", "export", "-", d2)
	tr := tar.NewReader(strings.NewReader(out))
	hdr, err := tr.Next()
	if err != nil || hdr.Name != "blobs/sha256/"+strings.TrimPrefix(d2, "sha256:") {
		t.Fatalf("export - : %v %v", hdr, err)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("export - has more than the named blob: %v", err)
	}
}

func assertTarNames(t *testing.T, file string, want ...string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	got := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[hdr.Name] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("archive lacks %s (has %v)", w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("archive has %d members, want %d", len(got), len(want))
	}
}

func TestContentIngestExpectations(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	data := bytes.Repeat([]byte("x"), 100)

	c.Fail(1, bytes.NewReader(data), []string{"content", "ingest", "--expected-size", "99", "r1"}, "r1")
	c.Fail(1, bytes.NewReader(data), []string{"content", "ingest", "--expected-digest", sha([]byte("other")), "r2"}, "r2")
	if got := c.OK(nil, "content", "ls", "-q"); got != "" {
		t.Fatalf("a failed ingest left a blob: %q", got)
	}
	if _, err := os.ReadDir(filepath.Join(c.Root, "blobs", "sha256")); err != nil {
		t.Fatal(err)
	}
	if n := countFiles(t, filepath.Join(c.Root, "blobs", "sha256")); n != 0 {
		t.Fatalf("%d files under blobs/ after failed ingests", n)
	}

	// stdin ending early keeps what arrived; a re-sent stream resumes.
	c.Fail(1, bytes.NewReader(data[:10]), []string{"content", "ingest", "--expected-size", "100", "short"}, "short")
	active := c.OK(nil, "content", "active")
	if !strings.Contains(active, "short") || !strings.Contains(active, "10") {
		t.Fatalf("active after short stdin:\n%s", active)
	}
	r := c.Run(bytes.NewReader(data), "content", "ingest", "--expected-size", "100", "short")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != sha(data) || !strings.Contains(r.Stderr, "resuming short at 10 bytes") {
		t.Fatalf("resume: %+v", r)
	}
	if got := c.OK(nil, "content", "active", "-q"); strings.Contains(got, "short") {
		t.Fatalf("ingest still active after commit: %q", got)
	}

	// Without expectations, a resumed ingest whose stored bytes are not the
	// new input's starts over: it stores the new input, never A's start
	// joined to B's rest.
	a, b := bytes.Repeat([]byte("a"), 100), bytes.Repeat([]byte("b"), 100)
	c.Fail(1, bytes.NewReader(a[:40]), []string{"content", "ingest", "--expected-size", "100", "joined"}, "joined")
	r = c.Run(bytes.NewReader(b), "content", "ingest", "joined")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != sha(b) ||
		!strings.Contains(r.Stderr, "ingest joined: the input differs from the 40 bytes stored after byte 0: started over") {
		t.Fatalf("ingest of other input over a partial one: %+v", r)
	}
	if got := c.OK(nil, "content", "get", sha(b)); got != string(b) {
		t.Fatalf("stored %q", got)
	}

	// Malformed arguments are usage errors.
	c.Fail(2, bytes.NewReader(data), []string{"content", "ingest", "--expected-digest", "sha256:xyz", "r3"}, "sha256:xyz")
	c.Fail(2, bytes.NewReader(data), []string{"content", "ingest"}, "wrong number of arguments")
	c.Fail(2, nil, []string{"content", "ingest", "--no-such-flag", "r"}, "no-such-flag")
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return len(ents)
}

func TestContentBadDigests(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.OK(strings.NewReader("a"), "content", "ingest", "a")
	unknown := sha([]byte("never stored"))
	c.Fail(2, nil, []string{"content", "info", "zzz"}, "zzz")
	c.Fail(2, nil, []string{"content", "info", "abc123"}, "at least 12")
	c.Fail(2, nil, []string{"content", "get", "md5:abcd"}, "md5:abcd")
	c.Fail(1, nil, []string{"content", "info", unknown}, "not found")
	c.Fail(1, nil, []string{"content", "get", strings.TrimPrefix(unknown, "sha256:")[:16]}, "no blob matches")
	c.Fail(1, nil, []string{"content", "verify", unknown}, "not found")
	c.Fail(2, nil, []string{"content", "label", sha([]byte("a")), "=x"}, "=x")
	c.Fail(2, nil, []string{"content", "ls", "--format", "yaml"}, "yaml")
	c.Fail(2, nil, []string{"content", "nope"}, "nope")
}

func TestContentStoreRoots(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.Fail(1, nil, []string{"content", "ls"}, "no store at", c.Root)
	if _, err := os.Stat(c.Root); !os.IsNotExist(err) {
		t.Fatalf("a read-only command created the root: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("x"), 0o644)
	c.Root = file
	c.Fail(1, strings.NewReader("x"), []string{"content", "ingest", "r"}, file, "not a directory")
	c.Root = filepath.Join(file, "sub")
	c.Fail(1, strings.NewReader("x"), []string{"content", "ingest", "r"}, "not a directory")
}

func TestContentLockedRefAndBusyStore(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.OK(strings.NewReader("init"), "content", "ingest", "init")

	// A first ingest holds its ref (and the store) while stdin stays open.
	pr, pw := io.Pipe()
	first := c.command(pr, "content", "ingest", "held")
	var firstErr bytes.Buffer
	first.Stderr = &firstErr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close(); first.Process.Kill(); first.Wait() })
	// Enough bytes that the ingest writes through its buffers to disk.
	held := bytes.Repeat([]byte("y"), 8<<20)
	written := make(chan error, 1)
	go func() { _, err := pw.Write(held); written <- err }()
	waitForIngest(t, c.Root, 1<<20)

	c.Fail(1, strings.NewReader("z"), []string{"content", "ingest", "held"}, "locked", "held")
	// The first ingest's process serves the store to other commands.
	if got := c.OK(nil, "content", "ls", "-q"); strings.TrimSpace(got) != sha([]byte("init")) {
		t.Errorf("content ls while another command holds the store: %q, want the one stored blob", got)
	}

	// Closing the pipe mid-write would end the ingest short of held.
	if err := <-written; err != nil {
		t.Fatalf("feeding the first ingest: %v", err)
	}
	pw.Close()
	if err := first.Wait(); err != nil {
		t.Fatalf("first ingest: %v: %s", err, firstErr.String())
	}
	if got := c.OK(nil, "content", "get", sha(held)); got != string(held) {
		t.Fatalf("held blob has %d bytes", len(got))
	}
}

// waitForIngest waits (bounded) until an ingest data file under root has n bytes.
func waitForIngest(t *testing.T, root string, n int64) {
	t.Helper()
	deadline := time.Now().Add(cmdTimeout)
	for time.Now().Before(deadline) {
		files, _ := filepath.Glob(filepath.Join(root, "ingest", "*", "data"))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil && fi.Size() >= n {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no ingest reached %d bytes within %v", n, cmdTimeout)
}

func TestContentCorruptBlob(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	data := []byte("precious bytes")
	d := sha(data)
	c.OK(bytes.NewReader(data), "content", "ingest", "p")
	good := sha([]byte("fine"))
	c.OK(strings.NewReader("fine"), "content", "ingest", "f")

	path := filepath.Join(c.Root, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
	os.Chmod(path, 0o644)
	os.WriteFile(path, []byte("Precious bytes"), 0o444)

	r := c.Fail(1, nil, []string{"content", "verify"}, d, "does not match")
	if strings.Contains(r.Stdout, good) {
		t.Errorf("verify named a good blob: %s", r.Stdout)
	}
	c.Fail(1, nil, []string{"content", "verify", d}, d)
	r = c.Fail(1, nil, []string{"content", "get", d}, d, "digest mismatch")
	if r.Stdout != "" {
		t.Fatalf("get served %d bytes of a corrupt blob", len(r.Stdout))
	}
	c.OK(nil, "content", "verify", good)

	// A record whose file is gone is reported, not silently kept.
	os.Remove(path)
	c.Fail(1, nil, []string{"content", "verify"}, d, "missing")
}

func TestContentImportBadArchives(t *testing.T) {
	t.Parallel()
	good := []byte("good blob")
	goodName := "blobs/sha256/" + strings.TrimPrefix(sha(good), "sha256:")
	cases := []struct {
		name    string
		members []tarMember
		msg     string
	}{
		{"content not matching its name", []tarMember{{name: goodName, data: good}, {name: "blobs/sha256/" + strings.TrimPrefix(sha([]byte("a")), "sha256:"), data: []byte("b")}}, "does not match its digest"},
		{"dot-dot", []tarMember{{name: goodName, data: good}, {name: "../evil", data: []byte("x")}}, "outside the archive"},
		{"absolute", []tarMember{{name: "/etc/evil", data: []byte("x")}}, "outside the archive"},
		{"nested dot-dot", []tarMember{{name: "blobs/sha256/../../../evil", data: []byte("x")}}, "outside the archive"},
		{"not a digest", []tarMember{{name: "blobs/sha256/notahex", data: []byte("x")}}, "not named by its digest"},
		{"elsewhere", []tarMember{{name: "etc/passwd", data: []byte("x")}}, "not under blobs/sha256/"},
		{"symlink", []tarMember{{name: goodName, link: "/etc/passwd"}}, "not a regular file"},
		{"truncated", []tarMember{{name: goodName, data: good, truncate: true}}, "unexpected EOF"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLI(t)
			keep := []byte("already here")
			c.OK(bytes.NewReader(keep), "content", "ingest", "keep")
			before := treeOf(t, filepath.Join(c.Root, "blobs"))
			archive := writeTar(t, tc.members)
			c.Fail(1, nil, []string{"content", "import", archive}, tc.msg)
			if after := treeOf(t, filepath.Join(c.Root, "blobs")); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("store changed:\nbefore %v\nafter  %v", before, after)
			}
			if got := lines(c.OK(nil, "content", "ls", "-q")); len(got) != 1 || got[0] != sha(keep) {
				t.Fatalf("ls after failed import: %q", got)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(c.Root), "evil")); err == nil {
				t.Fatal("import wrote outside the store")
			}
		})
	}
}

type tarMember struct {
	name     string
	data     []byte
	link     string
	truncate bool
}

func writeTar(t *testing.T, members []tarMember) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		hdr := &tar.Header{Name: m.name, Mode: 0o444, Size: int64(len(m.data)), Typeflag: tar.TypeReg}
		if m.link != "" {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeSymlink, m.link, 0
		}
		tw.WriteHeader(hdr)
		tw.Write(m.data)
	}
	tw.Close()
	b := buf.Bytes()
	for _, m := range members {
		if m.truncate {
			b = b[:512+len(m.data)/2]
		}
	}
	p := filepath.Join(t.TempDir(), "archive.tar")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestContentCrash kills ingests with SIGKILL at random points: no partial
// blob may become visible, verify must pass, and the same ref must resume.
func TestContentCrash(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	const size = 64 << 20
	stream := make([]byte, size)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	rng.Read(stream)
	want := sha(stream)
	for trial := 0; trial < 4; trial++ {
		ref := fmt.Sprintf("crash-%d", trial)
		// Kill somewhere past the first 16 MiB, once at least half of what
		// was sent (less the writer's few MiB of buffers) has reached disk.
		cut := 16<<20 + rng.Intn(size-16<<20)
		pr, pw := io.Pipe()
		cmd := c.command(pr, "content", "ingest", "--expected-size", fmt.Sprint(size), ref)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { pw.Write(stream[:cut]) }()
		waitForIngest(t, c.Root, int64(cut)/2-4<<20)
		cmd.Process.Signal(syscall.SIGKILL)
		pr.Close()
		cmd.Wait()

		if n := countFiles(t, filepath.Join(c.Root, "blobs", "sha256")); n != trial {
			t.Fatalf("trial %d: %d blob files after the kill, want %d", trial, n, trial)
		}
		c.OK(nil, "content", "verify")
		r := c.Run(bytes.NewReader(stream), "content", "ingest", "--expected-size", fmt.Sprint(size), ref)
		if r.Code != 0 || strings.TrimSpace(r.Stdout) != want {
			t.Fatalf("trial %d: re-ingest: %+v", trial, r)
		}
		if !strings.Contains(r.Stderr, "resuming "+ref) {
			t.Errorf("trial %d: re-ingest after a kill at %d bytes did not resume: %q", trial, cut, r.Stderr)
		}
		c.OK(nil, "content", "verify")
		c.OK(nil, "content", "rm", want)
		// Keep one distinct blob per trial so the count above grows.
		c.OK(strings.NewReader(ref), "content", "ingest", ref+"-marker")
	}
}
