package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

// archiveFixture is a registry holding the busybox test image and a store
// that pulled it.
type archiveFixture struct {
	reg *testenv.Registry
	img *testimage.Image
	ref string // registry ref, as casfs records it
	c   *cli
}

func newArchiveFixture(t *testing.T, pullArgs ...string) *archiveFixture {
	t.Helper()
	testenv.RequireRoot(t)
	f := &archiveFixture{reg: testenv.StartRegistry(t, testenv.RegistryOptions{}), img: busyboxImage(t), c: newCLI(t)}
	f.ref = pushTestImage(t, f.reg, "lab/busybox", "1", f.img)
	f.c.OK(nil, append(append([]string{"image", "pull", "--plain-http", "-q"}, pullArgs...), f.ref)...)
	return f
}

// images maps each image name of a store to its target digest.
func archImages(t *testing.T, c *cli) map[string]string {
	t.Helper()
	var infos []struct {
		Name   string             `json:"name"`
		Target ocispec.Descriptor `json:"target"`
	}
	if err := json.Unmarshal([]byte(c.OK(nil, "image", "ls", "--format", "json")), &infos); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, i := range infos {
		out[i.Name] = i.Target.Digest.String()
	}
	return out
}

// archTarMembers lists an archive's archMember names and reads the small ones.
func archTarMembers(t *testing.T, path string) (names []string, small map[string][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	small = map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		names = append(names, hdr.Name)
		if hdr.Size < 1<<20 {
			b, _ := io.ReadAll(tr)
			small[hdr.Name] = b
		}
	}
	sort.Strings(names)
	return names, small
}

func archRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	testenv.Require(t, name)
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// An export is an OCI layout that containerd imports under the same name
// and digest; containerd's own export of it imports back into casfs with
// the digests unchanged.
func TestArchiveContainerdRoundTrip(t *testing.T) {
	t.Parallel() // latency-bound (process starts, fsyncs): overlap with the other archive tests
	f := newArchiveFixture(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "casfs.tar")
	f.c.OK(nil, "image", "export", file, f.ref)

	names, small := archTarMembers(t, file)
	for _, want := range []string{"oci-layout", "index.json", "manifest.json", "blobs/sha256/" + f.img.Manifest.Digest.Encoded()} {
		if sort.SearchStrings(names, want) == len(names) || names[sort.SearchStrings(names, want)] != want {
			t.Errorf("export lacks %s: %q", want, names)
		}
	}
	var idx ocispec.Index
	if err := json.Unmarshal(small["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %s %v", small["index.json"], err)
	}
	if a := idx.Manifests[0].Annotations; a["io.containerd.image.name"] != f.ref || a["org.opencontainers.image.ref.name"] != "1" {
		t.Errorf("index.json annotations %v", a)
	}
	var dm []struct {
		Config           string
		RepoTags, Layers []string
	}
	if err := json.Unmarshal(small["manifest.json"], &dm); err != nil || len(dm) != 1 ||
		dm[0].Config != "blobs/sha256/"+f.img.Config.Digest.Encoded() || len(dm[0].Layers) != 2 || len(dm[0].RepoTags) != 1 || dm[0].RepoTags[0] != f.ref {
		t.Errorf("manifest.json: %s %v", small["manifest.json"], err)
	}

	ctrd := testenv.StartContainerd(t)
	ctrd.Ctr(t, "image", "import", file)
	out := ctrd.Ctr(t, "image", "ls")
	if !strings.Contains(out, f.ref) || !strings.Contains(out, f.img.Manifest.Digest.String()) {
		t.Fatalf("ctr image ls after import lacks %s %s:\n%s", f.ref, f.img.Manifest.Digest, out)
	}
	back := filepath.Join(dir, "ctr.tar")
	ctrd.Ctr(t, "image", "export", back, f.ref)

	c2 := newCLI(t)
	got := lines(c2.OK(nil, "image", "import", back))
	if len(got) != 1 || got[0] != f.ref {
		t.Fatalf("import of ctr's export printed %q", got)
	}
	if imgs := archImages(t, c2); imgs[f.ref] != f.img.Manifest.Digest.String() {
		t.Fatalf("after round trip: %v, want %s -> %s", imgs, f.ref, f.img.Manifest.Digest)
	}
	for _, l := range f.img.Layers {
		if _, err := os.Stat(filepath.Join(c2.Root, "blobs", "sha256", l.Digest.Encoded())); err != nil {
			t.Errorf("layer %s not stored: %v", l.Digest, err)
		}
	}
	// Unpacked: the snapshots of both layers exist.
	if n := len(lines(c2.OK(nil, "snapshot", "ls", "-q"))); n < 2 {
		t.Logf("snapshot ls: %d", n)
	}
}

// skopeo reads casfs exports both as oci-archive and as docker-archive and
// writes archives casfs imports.
func TestArchiveSkopeo(t *testing.T) {
	t.Parallel() // latency-bound (process starts, fsyncs): overlap with the other archive tests
	testenv.Require(t, "skopeo")
	f := newArchiveFixture(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "casfs.tar")
	f.c.OK(nil, "image", "export", file, f.ref)
	noTLS := []string{"copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"}

	// oci-archive keeps the manifest as it is: the digest survives. As in
	// containerd's exports, org.opencontainers.image.ref.name is the tag.
	archRun(t, "skopeo", append(noTLS, "oci-archive:"+file+":1", "docker://"+f.reg.Ref("lab/from-oci", "1"))...)
	// docker-archive: skopeo makes its own manifest; the config survives.
	archRun(t, "skopeo", append(noTLS, "docker-archive:"+file, "docker://"+f.reg.Ref("lab/from-docker", "1"))...)
	c2 := newCLI(t)
	c2.OK(nil, "image", "pull", "--plain-http", "-q", f.reg.Ref("lab/from-oci", "1"))
	c2.OK(nil, "image", "pull", "--plain-http", "-q", f.reg.Ref("lab/from-docker", "1"))
	imgs := archImages(t, c2)
	if got := imgs[f.reg.Ref("lab/from-oci", "1")]; got != f.img.Manifest.Digest.String() {
		t.Errorf("oci-archive -> registry -> pull: digest %s, want %s", got, f.img.Manifest.Digest)
	}
	var detail struct {
		Manifest ocispec.Manifest `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(c2.OK(nil, "image", "info", f.reg.Ref("lab/from-docker", "1"))), &detail); err != nil {
		t.Fatal(err)
	}
	if detail.Manifest.Config.Digest != f.img.Config.Digest {
		t.Errorf("docker-archive -> registry -> pull: config %s, want %s", detail.Manifest.Config.Digest, f.img.Config.Digest)
	}

	// Archives skopeo writes from the registry.
	ociFile, dockerFile := filepath.Join(dir, "skopeo-oci.tar"), filepath.Join(dir, "skopeo-docker.tar")
	archRun(t, "skopeo", append(noTLS, "docker://"+f.ref, "oci-archive:"+ociFile+":lab/busybox:1")...)
	c3 := newCLI(t)
	if got := lines(c3.OK(nil, "image", "import", ociFile)); len(got) != 1 || got[0] != "docker.io/lab/busybox:1" {
		t.Fatalf("import of skopeo's oci-archive printed %q", got)
	}
	if got := archImages(t, c3)["docker.io/lab/busybox:1"]; got != f.img.Manifest.Digest.String() {
		t.Errorf("skopeo oci-archive import: digest %s, want %s", got, f.img.Manifest.Digest)
	}
	// skopeo cannot write zstd layers to a docker-archive: use a gzip-only
	// docker image for that direction.
	small := archSmallImage(t, true)
	smallRef := pushTestImage(t, f.reg, "lab/small", "1", small)
	archRun(t, "skopeo", append(noTLS, "docker://"+smallRef, "docker-archive:"+dockerFile+":lab/small:1")...)
	c4 := newCLI(t)
	if got := lines(c4.OK(nil, "image", "import", dockerFile)); len(got) != 1 || got[0] != "docker.io/lab/small:1" {
		t.Fatalf("import of skopeo's docker-archive printed %q", got)
	}
	if err := json.Unmarshal([]byte(c4.OK(nil, "image", "info", "lab/small:1")), &detail); err != nil {
		t.Fatal(err)
	}
	if detail.Manifest.Config.Digest != small.Config.Digest || len(detail.Manifest.Layers) != 2 {
		t.Errorf("skopeo docker-archive import: manifest %+v, want config %s", detail.Manifest, small.Config.Digest)
	}
	for i, l := range detail.Manifest.Layers {
		if l.Digest != small.DiffIDs[i] || l.MediaType != "application/vnd.docker.image.rootfs.diff.tar" {
			t.Errorf("docker-archive layer %d: %s %s, want the uncompressed %s", i, l.MediaType, l.Digest, small.DiffIDs[i])
		}
	}
	if got := c4.OK(nil, "content", "get", string(detail.Manifest.Config.Digest)); got != string(small.ConfigBytes()) {
		t.Errorf("imported config differs from the original")
	}
}

// archSmallImage is a two-layer gzip image archWithout busybox (docker media types
// when docker is set).
func archSmallImage(t *testing.T, docker bool) *testimage.Image {
	t.Helper()
	img, err := testimage.Build(testimage.ImageSpec{
		Docker: docker,
		Layers: []testimage.Layer{
			{Files: []testimage.File{testimage.Dir("etc", 0o755), testimage.Reg("etc/a", 0o644, "layer one\n")}, DockerMediaType: docker},
			{Files: []testimage.File{testimage.Reg("etc/b", 0o600, "layer two\n"), testimage.Whiteout("etc", "a")}, DockerMediaType: docker},
		},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/true"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// archMember is one tar entry of a hand-made archive.
type archMember struct {
	name, link string
	typ        byte
	data       []byte
}

func archWriteTar(t *testing.T, path string, ms []archMember) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		typ := m.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: m.name, Linkname: m.link, Typeflag: typ, Mode: 0o644, Size: int64(len(m.data)), Format: tar.FormatPAX}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(m.data)
	}
	tw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// archOCIMembers is an OCI layout of imgs, each entry named by names[i].
func archOCIMembers(imgs []*testimage.Image, names []string) []archMember {
	idx := ocispec.Index{Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	ms := []archMember{{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)}}
	seen := map[string]bool{}
	for i, img := range imgs {
		d := img.Manifest
		d.Platform = nil
		d.Annotations = map[string]string{"io.containerd.image.name": names[i]}
		idx.Manifests = append(idx.Manifests, d)
		keys := make([]string, 0, len(img.Blobs))
		for k := range img.Blobs {
			keys = append(keys, k.Encoded())
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !seen[k] {
				seen[k] = true
				ms = append(ms, archMember{name: "blobs/sha256/" + k, data: img.Blobs[archDigest(k)]})
			}
		}
	}
	b, _ := json.Marshal(idx)
	return append(ms, archMember{name: "index.json", data: b})
}

func archDigest(hex string) digest.Digest { return digest.NewDigestFromEncoded(digest.SHA256, hex) }

func archWithout(ms []archMember, name string) []archMember {
	var out []archMember
	for _, m := range ms {
		if m.name != name {
			out = append(out, m)
		}
	}
	return out
}

func archReplaced(ms []archMember, name string, m archMember) []archMember {
	out := append([]archMember{}, ms...)
	for i := range out {
		if out[i].name == name {
			out[i] = m
		}
	}
	return out
}

// Bad archives fail with one clear line and exit 1, and leave the store as
// it was: no blob, ingest or image appears.
func TestArchiveImportRefusesBadInput(t *testing.T) {
	t.Parallel() // latency-bound (process starts, fsyncs): overlap with the other archive tests
	testenv.RequireRoot(t)
	a, b := archSmallImage(t, false), archSmallImage(t, true)
	c := newCLI(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.tar")
	archWriteTar(t, good, archOCIMembers([]*testimage.Image{a}, []string{"lab/a:1"}))
	if got := lines(c.OK(nil, "image", "import", good)); len(got) != 1 || got[0] != "docker.io/lab/a:1" {
		t.Fatalf("import printed %q", got)
	}

	base := archOCIMembers([]*testimage.Image{b}, []string{"lab/b:1"})
	layer := "blobs/sha256/" + b.Layers[1].Digest.Encoded()
	flipped := append([]byte{}, b.Blobs[b.Layers[1].Digest]...)
	flipped[len(flipped)-1] ^= 0xff
	var idxNowhere bytes.Buffer
	json.NewEncoder(&idxNowhere).Encode(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []ocispec.Descriptor{{
		MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("nothing"), Size: 7,
		Annotations: map[string]string{"io.containerd.image.name": "lab/b:1"}}}})
	full := archWriteTar(t, filepath.Join(dir, "full.tar"), base)

	cases := []struct {
		name string
		ms   []archMember
		raw  []byte // instead of ms
		want string
	}{
		{"blob does not match its name", archReplaced(base, layer, archMember{name: layer, data: flipped}), nil, "does not match the digest it is named by"},
		{"missing blob", archWithout(base, layer), nil, "missing from the archive"},
		{"dot-dot member", append([]archMember{{name: "blobs/../../evil", data: []byte("x")}}, base...), nil, "leaves the archive"},
		{"absolute member", append([]archMember{{name: "/etc/evil", data: []byte("x")}}, base...), nil, "absolute"},
		{"symlink blob", archReplaced(base, layer, archMember{name: layer, typ: tar.TypeSymlink, link: "/etc/passwd"}), nil, "is a symlink"},
		{"symlink out of the archive", append([]archMember{{name: "x/layer.tar", typ: tar.TypeSymlink, link: "../../etc/passwd"}}, base...), nil, "outside the archive"},
		{"hard link", append([]archMember{{name: "x", typ: tar.TypeLink, link: "oci-layout"}}, base...), nil, "not a regular file"},
		{"truncated tar", nil, full[:len(full)/2], "truncated"},
		{"index.json points at nothing", archReplaced(base, "index.json", archMember{name: "index.json", data: idxNowhere.Bytes()}), nil, "not in the archive"},
		{"unknown format", []archMember{{name: "hello.txt", data: []byte("hi")}}, nil, "unknown archive format"},
		{"not a tar", nil, bytes.Repeat([]byte("not a tar archive "), 64), "not a readable tar"},
		{"one name, two images", archOCIMembers([]*testimage.Image{b, a}, []string{"lab/b:1", "lab/b:1"}), nil, "names two different images docker.io/lab/b:1"},
	}
	before, imgsBefore := archFiles(t, c), archImages(t, c)
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			p := filepath.Join(dir, "bad.tar")
			if tc.raw != nil {
				os.WriteFile(p, tc.raw, 0o644)
			} else {
				archWriteTar(t, p, tc.ms)
			}
			c.Fail(1, nil, []string{"image", "import", p}, tc.want)
			if after := archFiles(t, c); !archEqual(before, after) {
				t.Errorf("blobs or ingests changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
	// Listing images costs a process start: once for all cases.
	if imgsAfter := archImages(t, c); !archEqual(imgsBefore, imgsAfter) {
		t.Errorf("images changed: before %v, after %v", imgsBefore, imgsAfter)
	}
}

// archFiles is what must not change on disk when an import fails: the blob
// and ingest files.
func archFiles(t *testing.T, c *cli) map[string]string {
	files := treeOf(t, filepath.Join(c.Root, "blobs"))
	for k, v := range treeOf(t, filepath.Join(c.Root, "ingest")) {
		files["ingest/"+k] = v
	}
	return files
}

func archEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// archChainIDs are the chain IDs of diffIDs, as snapshot keys.
func archChainIDs(diffIDs []digest.Digest) []string {
	var out []string
	var chain digest.Digest
	for i, d := range diffIDs {
		if i == 0 {
			chain = d
		} else {
			chain = digest.FromString(chain.String() + " " + d.String())
		}
		out = append(out, chain.String())
	}
	return out
}

// requireUnpacked fails unless every layer of diffIDs has its snapshot.
func requireUnpacked(t *testing.T, c *cli, diffIDs []digest.Digest) {
	t.Helper()
	have := map[string]bool{}
	for _, k := range lines(c.OK(nil, "snapshot", "ls", "-q")) {
		have[k] = true
	}
	for _, id := range archChainIDs(diffIDs) {
		if !have[id] {
			t.Errorf("snapshot %s missing after import; have %v", id, have)
		}
	}
}

// A lazily pulled image lacks its layers: export fetches them first, and
// refuses with --local-only, leaving no file behind.
func TestArchiveExportLazyImage(t *testing.T) {
	t.Parallel() // latency-bound (process starts, fsyncs): overlap with the other archive tests
	f := newArchiveFixture(t, "--lazy")
	layer := filepath.Join(f.c.Root, "blobs", "sha256", f.img.Layers[0].Digest.Encoded())
	if _, err := os.Stat(layer); !os.IsNotExist(err) {
		t.Fatalf("lazy pull stored the layer: %v", err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "out.tar")
	f.c.Fail(1, nil, []string{"image", "export", "--local-only", file, f.ref}, "export "+f.ref, f.img.Layers[0].Digest.String(), "not local")
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused export left %v", ents)
	}
	f.c.OK(nil, "image", "export", file, f.ref)
	if _, err := os.Stat(layer); err != nil {
		t.Fatalf("export did not fetch the missing layer: %v", err)
	}
	names, _ := archTarMembers(t, file)
	for _, l := range f.img.Layers {
		if i := sort.SearchStrings(names, "blobs/sha256/"+l.Digest.Encoded()); i == len(names) || names[i] != "blobs/sha256/"+l.Digest.Encoded() {
			t.Errorf("export lacks layer %s", l.Digest)
		}
	}
	c2 := newCLI(t)
	c2.OK(nil, "image", "import", file)
	if got := archImages(t, c2)[f.ref]; got != f.img.Manifest.Digest.String() {
		t.Fatalf("import of the export: %s, want %s", got, f.img.Manifest.Digest)
	}
	requireUnpacked(t, c2, f.img.DiffIDs)
}

// Several images in one archive through stdout and stdin; --digests names;
// an OCI layout directory named by tag only needs --base-name.
func TestArchiveManyImagesStdioAndLayoutDir(t *testing.T) {
	t.Parallel() // latency-bound (process starts, fsyncs): overlap with the other archive tests
	testenv.RequireRoot(t)
	c := newCLI(t)
	a, b := archSmallImage(t, false), archSmallImage(t, true)
	dir := t.TempDir()
	seed := filepath.Join(dir, "seed.tar")
	archWriteTar(t, seed, archOCIMembers([]*testimage.Image{a, b}, []string{"lab/a:1", "example.com/lab/b:2"}))
	c.OK(nil, "image", "import", "--no-unpack", seed)
	c.OK(nil, "image", "tag", "lab/a:1", "lab/a:latest")
	if n := len(lines(c.OK(nil, "snapshot", "ls", "-q"))); n != 0 {
		t.Fatalf("--no-unpack made %d snapshots", n)
	}

	out := c.OK(nil, "image", "export", "-", "lab/a:1", "example.com/lab/b:2", "lab/a:latest")
	_, small := archTarMembers(t, writeFileT(t, filepath.Join(dir, "stdout.tar"), out))
	var dm []struct{ RepoTags []string }
	json.Unmarshal(small["manifest.json"], &dm)
	if len(dm) != 2 || strings.Join(dm[0].RepoTags, ",") != "lab/a:1,lab/a:latest" || strings.Join(dm[1].RepoTags, ",") != "example.com/lab/b:2" {
		t.Errorf("manifest.json groups tags per manifest in familiar form: %s", small["manifest.json"])
	}

	c2 := newCLI(t)
	got := lines(c2.OK(strings.NewReader(out), "image", "import", "--digests", "-"))
	want := []string{
		"docker.io/lab/a:1", "docker.io/lab/a@" + a.Manifest.Digest.String(),
		"example.com/lab/b:2", "example.com/lab/b@" + b.Manifest.Digest.String(),
		"docker.io/lab/a:latest",
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("import --digests printed\n%q\nwant\n%q", got, want)
	}
	imgs := archImages(t, c2)
	if imgs["docker.io/lab/a:latest"] != a.Manifest.Digest.String() || imgs["example.com/lab/b:2"] != b.Manifest.Digest.String() {
		t.Fatalf("imported %v", imgs)
	}
	requireUnpacked(t, c2, a.DiffIDs)

	layout := filepath.Join(dir, "layout")
	if err := testimage.WriteLayout(layout, "3", a.Manifest, a.Blobs); err != nil {
		t.Fatal(err)
	}
	c3 := newCLI(t)
	c3.Fail(1, nil, []string{"image", "import", layout}, "give --base-name")
	c3.Fail(2, nil, []string{"image", "import", "--base-name", "Not A Name", layout}, "--base-name")
	if got := lines(c3.OK(nil, "image", "import", "--base-name", "lab/dir", layout)); len(got) != 1 || got[0] != "docker.io/lab/dir:3" {
		t.Fatalf("layout directory import printed %q", got)
	}
	c3.Fail(1, nil, []string{"image", "export", filepath.Join(dir, "x.tar"), "lab/nothing:1"}, "lab/nothing")
	c3.Fail(2, nil, []string{"image", "export", filepath.Join(dir, "x.tar")}, "wrong number of arguments")
}

func writeFileT(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The old `docker save` format: <id>/layer.tar directories, a <hex>.json
// config, manifest.json and repositories; skopeo links layer.tar files to
// <hex>.tar. Uncompressed layers become docker rootfs.diff.tar blobs.
func TestArchiveImportDockerSave(t *testing.T) {
	t.Parallel() // latency-bound (process starts, fsyncs): overlap with the other archive tests
	testenv.RequireRoot(t)
	img, err := testimage.Build(testimage.ImageSpec{
		Docker: true,
		Layers: []testimage.Layer{
			{Files: []testimage.File{testimage.Dir("etc", 0o755), testimage.Reg("etc/a", 0o644, "one\n")}, Compression: "none", DockerMediaType: true},
			{Files: []testimage.File{testimage.Reg("etc/b", 0o644, "two\n")}, Compression: "none", DockerMediaType: true},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	id1, id2 := strings.Repeat("1", 64), strings.Repeat("2", 64)
	l1, l2 := img.Blobs[img.Layers[0].Digest], img.Blobs[img.Layers[1].Digest]
	cfg := img.Config.Digest.Encoded() + ".json"
	manifest := `[{"Config":"` + cfg + `","RepoTags":["lab/legacy:1","lab/legacy:2"],"Layers":["` + id1 + `/layer.tar","` + id2 + `/layer.tar"]}]`
	file := filepath.Join(t.TempDir(), "save.tar")
	archWriteTar(t, file, []archMember{
		{name: id1 + "/", typ: tar.TypeDir},
		{name: id1 + "/VERSION", data: []byte("1.0")},
		{name: id1 + "/json", data: []byte(`{"id":"` + id1 + `"}`)},
		{name: id1 + "/layer.tar", data: l1},
		{name: img.Layers[1].Digest.Encoded() + ".tar", data: l2},
		{name: id2 + "/layer.tar", typ: tar.TypeSymlink, link: "../" + img.Layers[1].Digest.Encoded() + ".tar"},
		{name: cfg, data: img.ConfigBytes()},
		{name: "repositories", data: []byte(`{"lab/legacy":{"1":"` + id2 + `"}}`)},
		{name: "manifest.json", data: []byte(manifest)},
	})
	c := newCLI(t)
	got := lines(c.OK(nil, "image", "import", file))
	if strings.Join(got, ",") != "docker.io/lab/legacy:1,docker.io/lab/legacy:2" {
		t.Fatalf("import printed %q", got)
	}
	first := archImages(t, c)
	if again := lines(c.OK(nil, "image", "import", file)); strings.Join(again, ",") != strings.Join(got, ",") {
		t.Fatalf("second import printed %q", again)
	}
	if second := archImages(t, c); !archEqual(first, second) {
		t.Fatalf("importing again changed the generated manifest: %v -> %v", first, second)
	}
	var detail struct {
		Target   ocispec.Descriptor `json:"target"`
		Manifest ocispec.Manifest   `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(c.OK(nil, "image", "info", "lab/legacy:2")), &detail); err != nil {
		t.Fatal(err)
	}
	m := detail.Manifest
	if detail.Target.MediaType != "application/vnd.docker.distribution.manifest.v2+json" || m.Config.Digest != img.Config.Digest ||
		m.Config.MediaType != "application/vnd.docker.container.image.v1+json" || len(m.Layers) != 2 {
		t.Fatalf("generated manifest: %+v %+v", detail.Target, m)
	}
	for i, l := range m.Layers {
		if l.Digest != img.DiffIDs[i] || l.MediaType != "application/vnd.docker.image.rootfs.diff.tar" {
			t.Errorf("layer %d: %s %s", i, l.MediaType, l.Digest)
		}
	}
	requireUnpacked(t, c, img.DiffIDs)
	// The legacy json and VERSION files are not blobs of any image.
	for _, extra := range []string{"1.0", `{"id":"` + id1 + `"}`} {
		if _, err := os.Stat(filepath.Join(c.Root, "blobs", "sha256", digest.FromString(extra).Encoded())); !os.IsNotExist(err) {
			t.Errorf("legacy file %q was stored as a blob", extra)
		}
	}
}

// A multi-platform image exports as its index with the chosen platforms'
// manifests; the import keeps the index digest.
func TestArchiveMultiPlatform(t *testing.T) {
	t.Parallel() // latency-bound (process starts, fsyncs): overlap with the other archive tests
	testenv.RequireRoot(t)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	idx := platformIndex(t, []string{runtime.GOARCH, other}, func(arch string) []testimage.Layer {
		return []testimage.Layer{{Files: []testimage.File{testimage.Reg("arch", 0o644, arch+"\n")}}}
	})
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ref := pushIndex(t, reg, "lab/multi", "1", idx)
	imgs := idx.Images
	c := newCLI(t)
	c.OK(nil, "image", "pull", "--plain-http", "-q", ref)
	dir := t.TempDir()
	here := filepath.Join(dir, "here.tar")
	c.OK(nil, "image", "export", here, ref)
	names, _ := archTarMembers(t, here)
	wantNames := []string{"blobs/", "blobs/sha256/", "index.json", "manifest.json", "oci-layout"}
	for _, d := range []digest.Digest{idx.Desc.Digest, imgs[0].Manifest.Digest, imgs[0].Config.Digest, imgs[0].Layers[0].Digest} {
		wantNames = append(wantNames, "blobs/sha256/"+d.Encoded())
	}
	sort.Strings(wantNames)
	if strings.Join(names, " ") != strings.Join(wantNames, " ") {
		t.Errorf("export of this platform:\n%q\nwant\n%q", names, wantNames)
	}
	c.Fail(1, nil, []string{"image", "export", "--all-platforms", filepath.Join(dir, "all.tar"), ref}, "linux/"+other, "not in the store")
	c.Fail(1, nil, []string{"image", "export", "--platform", "linux/" + other, filepath.Join(dir, "all.tar"), ref}, "linux/"+other, "not in the store")
	c.Fail(2, nil, []string{"image", "export", "--platform", "linux/" + other, "--all-platforms", filepath.Join(dir, "all.tar"), ref}, "exclude")

	// containerd takes the index with only this platform's manifest.
	ctrd := testenv.StartContainerd(t)
	ctrd.Ctr(t, "image", "import", here)
	if out := ctrd.Ctr(t, "image", "ls"); !strings.Contains(out, ref) || !strings.Contains(out, idx.Desc.Digest.String()) {
		t.Errorf("ctr image ls after importing one platform of an index:\n%s", out)
	}

	c2 := newCLI(t)
	c2.OK(nil, "image", "import", here)
	if got := archImages(t, c2)[ref]; got != idx.Desc.Digest.String() {
		t.Fatalf("import of one platform: %s, want the index %s", got, idx.Desc.Digest)
	}
	requireUnpacked(t, c2, imgs[0].DiffIDs)

	c.OK(nil, "image", "pull", "--plain-http", "-q", "--all-platforms", ref)
	all := filepath.Join(dir, "all.tar")
	c.OK(nil, "image", "export", "--all-platforms", all, ref)
	names, _ = archTarMembers(t, all)
	if len(names) != len(wantNames)+3 {
		t.Errorf("export of all platforms has %d members, want %d: %q", len(names), len(wantNames)+3, names)
	}
	foreign := filepath.Join(dir, "foreign.tar")
	c.OK(nil, "image", "export", "--platform", "linux/"+other, foreign, ref)
	names, _ = archTarMembers(t, foreign)
	if i := sort.SearchStrings(names, "blobs/sha256/"+imgs[1].Manifest.Digest.Encoded()); i == len(names) || names[i] != "blobs/sha256/"+imgs[1].Manifest.Digest.Encoded() {
		t.Errorf("export --platform linux/%s lacks its manifest: %q", other, names)
	}
	c3 := newCLI(t)
	c3.OK(nil, "image", "import", all)
	if got := archImages(t, c3)[ref]; got != idx.Desc.Digest.String() {
		t.Fatalf("import of all platforms: %s", got)
	}
	for _, img := range imgs {
		if _, err := os.Stat(filepath.Join(c3.Root, "blobs", "sha256", img.Layers[0].Digest.Encoded())); err != nil {
			t.Errorf("layer of %s not imported: %v", img.Manifest.Platform.Architecture, err)
		}
	}
	if snaps := lines(c3.OK(nil, "snapshot", "ls", "-q")); len(snaps) != 1 || snaps[0] != imgs[0].DiffIDs[0].String() {
		t.Errorf("only this machine's platform is unpacked: %q", snaps)
	}
}

// With a mount daemon running, export and import go through its socket: a
// lazy image is fetched by the daemon, an import shows in the live mount.
func TestArchiveThroughDaemon(t *testing.T) {
	t.Parallel() // latency-bound (process starts, fsyncs): overlap with the other archive tests
	f := newArchiveFixture(t, "--lazy")
	mnt := mountCASFS(t, f.c)
	if _, err := os.Stat(filepath.Join(f.c.Root, "casfs.sock")); err != nil {
		t.Fatalf("no daemon socket: %v", err)
	}
	out := f.c.OK(nil, "image", "export", "-", f.ref)
	c2 := newCLI(t)
	c2.OK(strings.NewReader(out), "image", "import", "-")
	if got := archImages(t, c2)[f.ref]; got != f.img.Manifest.Digest.String() {
		t.Fatalf("import of the daemon's export: %s", got)
	}
	small := archSmallImage(t, false)
	file := filepath.Join(t.TempDir(), "small.tar")
	archWriteTar(t, file, archOCIMembers([]*testimage.Image{small}, []string{"lab/small:7"}))
	if got := lines(f.c.OK(nil, "image", "import", file)); len(got) != 1 || got[0] != "docker.io/lab/small:7" {
		t.Fatalf("import through the daemon printed %q", got)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "images", "docker.io", "lab", "small", "7", "config.json"))
	if err != nil || string(b) != string(small.ConfigBytes()) {
		t.Fatalf("imported image in the live mount: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.tar")
	archWriteTar(t, bad, archWithout(archOCIMembers([]*testimage.Image{small}, []string{"lab/small:8"}), "blobs/sha256/"+small.Layers[0].Digest.Encoded()))
	f.c.Fail(1, nil, []string{"image", "import", bad}, "missing from the archive")
}
