package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// corpusEnv is what the hostile corpus runs against: one store with a blob
// and an image in it, a real registry with hostile layers, a registry
// stand-in that answers hostile documents, files, and (started by the
// first socket case) a mount daemon.
type corpusEnv struct {
	t    *testing.T
	c    *cli
	dir  string            // files the cases read
	vars map[string]string // {name} placeholders in args
	mnt  string
	// fetchable lists, per repository, the blobs a failed pull of it may
	// leave behind: those the registry really holds for it.
	fetchable map[string][]string
}

// corpusCase is one hostile input. A case runs a casfs command line
// (args, with {placeholders}) or, with api set, one request to the mount
// daemon's socket; it checks the exit code or HTTP status and the error
// text, then that the store is what it was.
type corpusCase struct {
	area, name string
	// fetches names the repository (a fetchable key) whose blobs a failed
	// pull may leave in the store.
	fetches string
	args    []string
	code    int
	msgs    []string
	api     *apiCase
}

type apiCase struct {
	method, path, body string
	status             int
	// nobody sends the request as uid 65534 with curl; openSocket first
	// makes the socket connectable by anyone, to reach the daemon's own
	// peer check behind the file mode.
	nobody, openSocket bool
}

func cliCase(area, name string, code int, msgs []string, args ...string) corpusCase {
	tc := corpusCase{area: area, name: name, args: args, code: code, msgs: msgs}
	if area == "registry" || area == "layers" {
		// The repository of the pulled reference.
		ref := args[len(args)-1]
		tc.fetches = ref[strings.IndexByte(ref, '/')+1 : strings.LastIndexByte(ref, ':')]
	}
	return tc
}

func sockCase(name string, a apiCase, msgs ...string) corpusCase {
	return corpusCase{area: "socket", name: name, api: &a, msgs: msgs}
}

func m(s ...string) []string { return s }

var specsV2 = specs.Versioned{SchemaVersion: 2}

func TestHostileCorpus(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	e := newCorpusEnv(t)
	zero := "sha256:" + strings.Repeat("0", 64)
	cases := []corpusCase{
		// The command line.
		cliCase("cli", "unknown command", 2, m(`unknown command "frobnicate"`), "frobnicate"),
		cliCase("cli", "unknown flag", 2, m("flag provided but not defined: -bogus"), "content", "ls", "--bogus"),
		cliCase("cli", "bad log level", 2, m(`--log-level "loud"`), "--log-level", "loud", "content", "ls"),
		cliCase("cli", "bad format", 2, m(`--format "xml": want table or json`), "content", "ls", "--format", "xml"),
		cliCase("cli", "get without digest", 2, m("wrong number of arguments", "casfs content get DIGEST"), "content", "get"),
		cliCase("cli", "get malformed digest", 2, m(`"sha256:xyz" is not a sha256 digest`), "content", "get", "sha256:xyz"),
		cliCase("cli", "get short prefix", 2, m(`"abc" is not a digest or a hex prefix of at least 12 characters`), "content", "get", "abc"),
		cliCase("cli", "get sha512 digest", 2, m("is not a sha256 digest"), "content", "get", "sha512:"+strings.Repeat("a", 128)),
		cliCase("cli", "get unknown blob", 1, m("blob "+zero+": not found"), "content", "get", zero),
		cliCase("cli", "rm malformed digest", 2, m(`"sha256:../../etc" is not a sha256 digest`), "content", "rm", "sha256:../../etc"),
		cliCase("cli", "verify malformed digest", 2, m("is not a sha256 digest"), "content", "verify", "sha256:"+strings.Repeat("g", 64)),
		cliCase("cli", "label without =", 2, m(`label "novalue": want key=value to set or key- to remove`), "content", "label", "{blob}", "novalue"),
		cliCase("cli", "label with empty key", 2, m(`label "=v"`), "content", "label", "{blob}", "=v"),
		cliCase("cli", "ingest bad expected digest", 2, m(`"nope" is not a sha256 digest`), "content", "ingest", "--expected-digest", "nope", "r"),
		cliCase("cli", "ingest negative size", 2, m("--expected-size must not be negative"), "content", "ingest", "--expected-size", "-5", "r"),
		cliCase("cli", "pull without ref", 2, m("wrong number of arguments", "casfs image pull REF"), "image", "pull"),
		cliCase("cli", "pull two refs", 2, m("wrong number of arguments"), "image", "pull", "a", "b"),
		cliCase("cli", "pull ref with a space", 2, m(`"a b" is not a valid image reference`), "image", "pull", "a b"),
		cliCase("cli", "pull ref with a bad digest", 2, m("is not a valid image reference"), "image", "pull", "x@sha256:abc"),
		cliCase("cli", "pull zero downloads", 2, m("--max-concurrent-downloads must be at least 1"), "image", "pull", "--max-concurrent-downloads", "0", "x"),
		cliCase("cli", "pull bad platform", 1, m(`platform "bogus": want os/arch[/variant]`), "image", "pull", "--platform", "bogus", "x"),
		cliCase("cli", "tag without destination", 2, m("wrong number of arguments", "SRC DST"), "image", "tag", "a"),
		cliCase("cli", "rm unknown image", 1, m("image docker.io/library/nope:1: not found"), "image", "rm", "nope:1"),
		cliCase("cli", "info unknown image", 1, m("not found"), "image", "info", "nope:1"),
		cliCase("cli", "mount without mountpoint", 2, m("wrong number of arguments", "casfs mount MOUNTPOINT"), "mount"),

		// Registry answers (a stand-in on 127.0.0.1).
		cliCase("registry", "malformed manifest JSON", 1, m("is not valid JSON", "invalid argument"), "image", "pull", "--plain-http", "{bad}/bad/json:1"),
		cliCase("registry", "schema1 manifest", 1, m("schema1 manifests are not supported"), "image", "pull", "--plain-http", "{bad}/bad/schema1:1"),
		cliCase("registry", "unknown manifest media type", 1, m(`unsupported manifest media type "application/vnd.example.thing+json"`), "image", "pull", "--plain-http", "{bad}/bad/unknown:1"),
		cliCase("registry", "manifest over 4 MiB", 1, m("over the limit of 4194304"), "image", "pull", "--plain-http", "{bad}/bad/huge:1"),
		cliCase("registry", "blob of the wrong size", 1, m("registry announced", "digest mismatch"), "image", "pull", "--plain-http", "{bad}/bad/size:1"),
		cliCase("registry", "blob with wrong bytes", 1, m("does not match", "digest mismatch"), "image", "pull", "--plain-http", "{bad}/bad/bytes:1"),
		cliCase("registry", "bad descriptor digest", 1, m("bad descriptor", "invalid argument"), "image", "pull", "--plain-http", "{bad}/bad/descriptor:1"),
		cliCase("registry", "index without this platform", 1, m("has no manifest for platform"), "image", "pull", "--plain-http", "{bad}/bad/platform:1"),
		cliCase("registry", "unknown tag", 1, m("not found"), "image", "pull", "--plain-http", "{bad}/bad/missing:1"),

		// Hostile layers in a real registry.
		cliCase("layers", "dotdot escape", 1, m("escapes the layer root"), "image", "pull", "--plain-http", "{reg}/hostile/dotdot:1"),
		cliCase("layers", "absolute symlink traversal", 1, m("evil"), "image", "pull", "--plain-http", "{reg}/hostile/abslink:1"),
		cliCase("layers", "hardlink escape", 1, m("passwd"), "image", "pull", "--plain-http", "{reg}/hostile/hardlink:1"),
		cliCase("layers", "path length bomb", 1, m("file name too long"), "image", "pull", "--plain-http", "{reg}/hostile/deep:1"),

		// Content archives.
		cliCase("archive", "member outside the archive", 1, m(`member "../blobs/sha256/`, "is outside the archive"), "content", "import", "{dir}/dotdot.tar"),
		cliCase("archive", "symlink member", 1, m("is not a regular file"), "content", "import", "{dir}/symlink.tar"),
		cliCase("archive", "member with wrong bytes", 1, m("does not match its digest", "digest mismatch"), "content", "import", "{dir}/wrong.tar"),
		cliCase("archive", "member not under blobs", 1, m("is not under blobs/sha256/"), "content", "import", "{dir}/other.tar"),
		cliCase("archive", "member not named by a digest", 1, m("is not named by its digest"), "content", "import", "{dir}/name.tar"),
		cliCase("archive", "truncated archive", 1, m("import"), "content", "import", "{dir}/truncated.tar"),
		cliCase("archive", "missing file", 1, m("no such file or directory"), "content", "import", "{dir}/nonexistent.tar"),

		// hosts.toml.
		cliCase("hosts", "bad TOML", 1, m("hosts.toml:2:"), "image", "pull", "--hosts-dir", "{dir}/hosts-bad", "--plain-http", "{reg}/lab/good:1"),
		cliCase("hosts", "server not http", 1, m("hosts.toml", "not an http(s) URL"), "image", "pull", "--hosts-dir", "{dir}/hosts-ftp", "--plain-http", "{reg}/lab/good:1"),

		// The daemon's socket.
		sockCase("malformed JSON", apiCase{method: "POST", path: "/v1/content/verify", body: `{"digests": [`, status: 400}, "malformed JSON"),
		sockCase("oversized body", apiCase{method: "POST", path: "/v1/content/verify", body: `{"digests":["` + strings.Repeat("a", 2<<20) + `"]}`, status: 413}, "larger than"),
		sockCase("unknown JSON field", apiCase{method: "POST", path: "/v1/images/pull", body: `{"ref":"x","options":{"insecure":true}}`, status: 400}, "insecure"),
		sockCase("unknown route", apiCase{method: "GET", path: "/v1/nope", status: 404}, "no route GET /v1/nope"),
		sockCase("wrong method", apiCase{method: "DELETE", path: "/v1/content", status: 405}, "DELETE is not allowed"),
		sockCase("escaped traversal", apiCase{method: "GET", path: "/v1/content/..%2F..%2Fetc%2Fpasswd", status: 404}, "not found"),
		sockCase("non-root user", apiCase{method: "GET", path: "/v1/content", nobody: true}, "Couldn't connect"),
		sockCase("non-root user past the file mode", apiCase{method: "GET", path: "/v1/content", nobody: true, openSocket: true, status: 403}, "uid 65534 may not use this daemon"),
	}
	fmt.Printf("hostile corpus: %d cases\n", len(cases))
	t.Logf("hostile corpus: %d cases", len(cases))
	before := e.state(t, true)
	for _, tc := range cases {
		t.Run(tc.area+"/"+tc.name, func(t *testing.T) {
			if tc.api != nil {
				e.runAPI(t, tc)
			} else {
				args := make([]string, len(tc.args))
				for i, a := range tc.args {
					args[i] = e.expand(a)
				}
				c := &cli{t: t, Root: e.c.Root, Bin: plainBin}
				c.Fail(tc.code, nil, args, tc.msgs...)
			}
			after := e.state(t, tc.code != 2)
			e.compare(t, tc, before, after)
			if after.listed || !before.listed {
				before = after
			} else {
				before.files = after.files
			}
		})
	}
	// What every case left is consistent: no blob whose bytes do not
	// match its name, no record without its file.
	e.check(t)
}

func (e *corpusEnv) expand(s string) string {
	for k, v := range e.vars {
		s = strings.ReplaceAll(s, "{"+k+"}", v)
	}
	return s
}

// storeState is the store: the files under blobs/ and ingest/ (read
// directly, no process), and, when listed, the blob records and images as
// the commands see them.
type storeState struct {
	files         map[string]string
	blobs, images []string
	listed        bool
}

// state reads the store; with list it also asks casfs for its blob and
// image lists. Usage errors are checked on the files alone: a command that
// fails its argument checks never opens the store, and each run of casfs
// costs seconds on a loaded machine.
func (e *corpusEnv) state(t *testing.T, list bool) storeState {
	t.Helper()
	st := storeState{files: map[string]string{}}
	for _, d := range []string{"blobs", "ingest"} {
		for p, v := range treeOf(t, filepath.Join(e.c.Root, d)) {
			st.files[d+"/"+p] = v
		}
	}
	if list {
		c := &cli{t: t, Root: e.c.Root, Bin: plainBin}
		st.blobs, st.images, st.listed = lines(c.OK(nil, "content", "ls", "-q")), lines(c.OK(nil, "image", "ls", "-q")), true
		slices.Sort(st.blobs)
		slices.Sort(st.images)
	}
	return st
}

// check wants a clean bill of health from `casfs check` when this casfs
// has it, else from content verify.
func (e *corpusEnv) check(t *testing.T) {
	t.Helper()
	c := &cli{t: t, Root: e.c.Root, Bin: plainBin}
	if c.Run(nil, "check", "--help").Code == 0 {
		c.OK(nil, "check")
	} else {
		c.OK(nil, "content", "verify")
	}
}

// compare wants the same images and blobs after a case as before, except
// that a pull that failed after fetching may leave the verified blobs of the
// image it fetched (garbage for gc, as in containerd) and nothing else.
func (e *corpusEnv) compare(t *testing.T, tc corpusCase, before, after storeState) {
	t.Helper()
	allowed := e.fetchable[tc.fetches]
	for p, v := range after.files {
		if bv, ok := before.files[p]; ok && bv != v {
			t.Errorf("%s changed: %s -> %s", p, bv, v)
		} else if !ok && !(strings.HasPrefix(p, "blobs/sha256/") && slices.Contains(allowed, "sha256:"+filepath.Base(p))) {
			t.Errorf("%s appeared in the store (%s)", p, v)
		}
	}
	for p := range before.files {
		if _, ok := after.files[p]; !ok {
			t.Errorf("%s disappeared from the store", p)
		}
	}
	if !before.listed || !after.listed {
		return
	}
	if !slices.Equal(before.images, after.images) {
		t.Errorf("images changed: %v -> %v", before.images, after.images)
	}
	for _, b := range after.blobs {
		if !slices.Contains(before.blobs, b) && !slices.Contains(allowed, b) {
			t.Errorf("blob record %s appeared (allowed: %v)", b, allowed)
		}
	}
	for _, b := range before.blobs {
		if !slices.Contains(after.blobs, b) {
			t.Errorf("blob record %s disappeared", b)
		}
	}
}

func newCorpusEnv(t *testing.T) *corpusEnv {
	e := &corpusEnv{t: t, c: newPlainCLI(t), dir: t.TempDir(), vars: map[string]string{}, fetchable: map[string][]string{}}
	e.vars["dir"] = e.dir
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	e.vars["reg"] = reg.Host

	// A store with something in it.
	good, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{{Files: []testimage.File{testimage.Reg("hello", 0o644, "hello\n")}}}})
	if err != nil {
		t.Fatal(err)
	}
	pushTestImage(t, reg, "lab/good", "1", good)
	e.c.OK(nil, "image", "pull", "--plain-http", reg.Host+"/lab/good:1")
	e.vars["blob"] = strings.TrimSpace(e.c.OK(strings.NewReader("a blob\n"), "content", "ingest", "-q", "corpus"))

	e.pushHostileLayers(t, reg)
	e.vars["bad"] = startBadRegistry(t, e.fetchable)
	e.writeArchives(t)
	e.writeHostsDirs(t, reg.Host)
	return e
}

// pushHostileLayers pushes one image per hostile layer.
func (e *corpusEnv) pushHostileLayers(t *testing.T, reg *testenv.Registry) {
	deep := strings.Repeat("d123456789/", 400) + "f"
	for repo, files := range map[string][]testimage.File{
		"dotdot": {testimage.Reg("../../../../tmp/casfs-corpus-evil", 0o644, "x")},
		"abslink": {
			testimage.Symlink("evil", filepath.Join(e.dir, "sentinel")),
			testimage.Reg("evil/owned", 0o644, "x"),
		},
		"hardlink": {{Path: "passwd", Hardlink: true, Linkname: "../../../../../../etc/passwd"}},
		"deep":     {testimage.Reg(deep, 0o644, "x")},
	} {
		img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{{Files: files, KeepOrder: true}}})
		if err != nil {
			t.Fatalf("build %s: %v", repo, err)
		}
		pushTestImage(t, reg, "hostile/"+repo, "1", img)
		for d := range img.Blobs {
			e.fetchable["hostile/"+repo] = append(e.fetchable["hostile/"+repo], d.String())
		}
	}
	if err := os.Mkdir(filepath.Join(e.dir, "sentinel"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ents, _ := os.ReadDir(filepath.Join(e.dir, "sentinel")); len(ents) != 0 {
			t.Errorf("a hostile layer wrote into the sentinel folder: %s", ents[0].Name())
		}
		if _, err := os.Lstat("/tmp/casfs-corpus-evil"); err == nil {
			t.Errorf("a hostile layer wrote /tmp/casfs-corpus-evil")
		}
	})
}

// startBadRegistry serves hostile documents under /v2/bad/<case>/.
// Each manifest (right bytes, wrong content) goes into fetchable.
func startBadRegistry(t *testing.T, fetchable map[string][]string) string {
	type doc struct {
		mt   string
		body []byte
	}
	manifests := map[string]doc{}
	blobs := map[digest.Digest][]byte{}
	lies := map[digest.Digest][]byte{} // served in place of the named blob
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	blobs[digest.FromBytes(cfg)] = cfg
	manifest := func(config ocispec.Descriptor) []byte {
		b, _ := json.Marshal(ocispec.Manifest{Versioned: specsV2, MediaType: ocispec.MediaTypeImageManifest, Config: config, Layers: []ocispec.Descriptor{}})
		return b
	}
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}

	manifests["json"] = doc{ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"config":`)}
	manifests["schema1"] = doc{"application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":1,"name":"bad/schema1","tag":"1","fsLayers":[]}`)}
	manifests["unknown"] = doc{"application/vnd.example.thing+json", []byte(`{}`)}
	manifests["huge"] = doc{ocispec.MediaTypeImageManifest, append([]byte(`{"schemaVersion":2,"layers":[]}`), bytes.Repeat([]byte(" "), 5<<20)...)}
	sized := cfgDesc
	sized.Size += 5
	manifests["size"] = doc{ocispec.MediaTypeImageManifest, manifest(sized)}
	wrongCfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"x":1}`)
	wrongDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(wrongCfg), Size: int64(len(wrongCfg))}
	lies[wrongDesc.Digest] = bytes.Replace(wrongCfg, []byte(`"x":1`), []byte(`"x":2`), 1)
	manifests["bytes"] = doc{ocispec.MediaTypeImageManifest, manifest(wrongDesc)}
	manifests["descriptor"] = doc{ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:zz","size":2},"layers":[]}`)}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specsV2, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{
		MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest(cfgDesc)), Size: int64(len(manifest(cfgDesc))),
		Platform: &ocispec.Platform{OS: "plan9", Architecture: "mips"},
	}}})
	manifests["platform"] = doc{ocispec.MediaTypeImageIndex, idx}
	for name, d := range manifests {
		fetchable["bad/"+name] = []string{digest.FromBytes(d.body).String()}
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v2/"), "/")
		if r.URL.Path == "/v2/" {
			return
		}
		if len(parts) != 4 || parts[0] != "bad" {
			http.NotFound(w, r)
			return
		}
		switch parts[2] {
		case "manifests":
			d, ok := manifests[parts[1]]
			if !ok || (parts[3] != "1" && parts[3] != digest.FromBytes(d.body).String()) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
				return
			}
			w.Header().Set("Content-Type", d.mt)
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(d.body).String())
			w.Header().Set("Content-Length", strconv.Itoa(len(d.body)))
			if r.Method == http.MethodGet {
				w.Write(d.body)
			}
		case "blobs":
			d := digest.Digest(parts[3])
			b, ok := lies[d]
			if !ok {
				b, ok = blobs[d]
			}
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			w.Write(b)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// writeArchives writes the content archives the archive cases import.
func (e *corpusEnv) writeArchives(t *testing.T) {
	member := func(typ byte, name, body, link string) func(*tar.Writer) {
		return func(tw *tar.Writer) {
			h := &tar.Header{Typeflag: typ, Name: name, Mode: 0o444, Size: int64(len(body)), Linkname: link}
			if typ != tar.TypeReg {
				h.Size = 0
			}
			tw.WriteHeader(h)
			io.WriteString(tw, body)
		}
	}
	blobName := func(body string) string { return "blobs/sha256/" + digest.FromString(body).Encoded() }
	good := member(tar.TypeReg, blobName("good member"), "good member", "")
	for name, ms := range map[string][]func(*tar.Writer){
		"dotdot.tar":  {good, member(tar.TypeReg, "../"+blobName("x"), "x", "")},
		"symlink.tar": {good, member(tar.TypeSymlink, blobName("x"), "", "/etc/passwd")},
		"wrong.tar":   {good, member(tar.TypeReg, blobName("right"), "wrong", "")},
		"other.tar":   {good, member(tar.TypeReg, "etc/passwd", "x", "")},
		"name.tar":    {good, member(tar.TypeReg, "blobs/sha256/not-a-digest", "x", "")},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, m := range ms {
			m(tw)
		}
		tw.Close()
		if err := os.WriteFile(filepath.Join(e.dir, name), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	good(tw)
	member(tar.TypeReg, blobName(strings.Repeat("y", 4096)), strings.Repeat("y", 4096), "")(tw)
	tw.Close()
	if err := os.WriteFile(filepath.Join(e.dir, "truncated.tar"), buf.Bytes()[:buf.Len()-3000], 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeHostsDirs writes broken hosts.toml files for the registry host.
func (e *corpusEnv) writeHostsDirs(t *testing.T, host string) {
	for name, toml := range map[string]string{
		"hosts-bad": "server = \"http://" + host + "\"\n[host.\"http://" + host + "\"\ncapabilities = [\"pull\"]\n",
		"hosts-ftp": "server = \"ftp://" + host + "\"\n",
	} {
		d := filepath.Join(e.dir, name, host)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// runAPI sends one request to the daemon's socket, mounting first if needed.
func (e *corpusEnv) runAPI(t *testing.T, tc corpusCase) {
	if e.mnt == "" {
		e.mnt = mountCASFS(e.t, e.c)
	}
	sock := filepath.Join(e.c.Root, "casfs.sock")
	a := tc.api
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if a.nobody {
		testenv.Require(t, "curl", "setpriv")
		// The test's temp folders are 0700: a second name for the socket
		// in /tmp (same filesystem) lets the socket's own mode decide.
		link := filepath.Join(os.TempDir(), fmt.Sprintf("casfs-corpus-%d.sock", os.Getpid()))
		os.Remove(link)
		if err := os.Link(sock, link); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(link)
		if a.openSocket {
			fi, err := os.Stat(sock)
			if err != nil {
				t.Fatal(err)
			}
			// An admin's mistake: the daemon's peer check must still refuse.
			os.Chmod(sock, 0o666)
			defer os.Chmod(sock, fi.Mode().Perm())
		}
		sock = link
		cmd := exec.CommandContext(ctx, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
			"curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", a.method, "--unix-socket", sock, "http://casfs"+a.path)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		err := cmd.Run()
		got := out.String() + stderr.String()
		if a.status == 0 {
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 7 {
				t.Errorf("curl as nobody: %v, want exit 7 (could not connect); output %q", err, got)
			}
		} else if code := out.String()[strings.LastIndexByte(out.String(), '\n')+1:]; err != nil || code != strconv.Itoa(a.status) {
			t.Errorf("curl as nobody: %v, HTTP %s, want %d; output %q", err, code, a.status, got)
		}
		for _, msg := range tc.msgs {
			if !strings.Contains(got, msg) {
				t.Errorf("curl as nobody: %q does not mention %q", got, msg)
			}
		}
		return
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, err := http.NewRequestWithContext(ctx, a.method, "http://casfs"+a.path, strings.NewReader(a.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != a.status {
		t.Errorf("%s %s: %s, want %d; body %s", a.method, a.path, resp.Status, a.status, body)
	}
	for _, msg := range tc.msgs {
		if !bytes.Contains(body, []byte(msg)) {
			t.Errorf("%s %s: body %s does not mention %q", a.method, a.path, body, msg)
		}
	}
}
