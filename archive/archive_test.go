package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

// memStager keeps staged blobs in memory and checks expected digests, as
// the store's stager does.
type memStager struct{ blobs map[digest.Digest][]byte }

func (m *memStager) Stage(ctx context.Context, member string, r io.Reader, size int64, expected digest.Digest) (digest.Digest, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	if int64(len(b)) != size {
		return "", io.ErrUnexpectedEOF
	}
	d := digest.FromBytes(b)
	if expected != "" && d != expected {
		return "", errdefs.ErrDigestMismatch
	}
	if m.blobs == nil {
		m.blobs = map[digest.Digest][]byte{}
	}
	m.blobs[d] = b
	return d, nil
}

type entry struct {
	name, link string
	typ        byte
	data       []byte
}

func tarOf(t *testing.T, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: typ, Mode: 0o644, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	return buf.Bytes()
}

// image is a one-layer OCI image: its blobs and manifest descriptor.
func image(t *testing.T, layer []byte) (ocispec.Descriptor, map[digest.Digest][]byte) {
	t.Helper()
	blobs := map[digest.Digest][]byte{}
	add := func(mt string, b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		blobs[d] = b
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	l := add(ocispec.MediaTypeImageLayer, layer)
	cfg, _ := json.Marshal(ocispec.Image{RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{l.Digest}}})
	c := add(ocispec.MediaTypeImageConfig, cfg)
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: c, Layers: []ocispec.Descriptor{l}})
	return add(ocispec.MediaTypeImageManifest, m), blobs
}

// export writes an archive with Writer, the way the store does.
func export(t *testing.T, descs []ocispec.Descriptor, blobs map[digest.Digest][]byte, docker []DockerManifest) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteMetadata(ocispec.Index{Manifests: descs}, docker); err != nil {
		t.Fatal(err)
	}
	for d, b := range blobs {
		if err := w.WriteBlob(d, int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteBlob(d, int64(len(b)), bytes.NewReader(nil)); err != nil {
			t.Fatalf("a blob written again must be skipped: %v", err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readPlan(t *testing.T, b []byte) (*Plan, *memStager, error) {
	t.Helper()
	st := &memStager{}
	c, err := Read(context.Background(), bytes.NewReader(b), st)
	if err != nil {
		return nil, st, err
	}
	p, err := c.Resolve()
	return p, st, err
}

func TestWriteReadRoundTrip(t *testing.T) {
	md, blobs := image(t, []byte("layer bytes"))
	named := md
	named.Annotations = map[string]string{AnnotationImageName: "docker.io/lab/x:1", AnnotationRefName: "1"}
	b := export(t, []ocispec.Descriptor{named}, blobs, []DockerManifest{{Config: "c", RepoTags: []string{"lab/x:1"}}})
	p, st, err := readPlan(t, b)
	if err != nil {
		t.Fatal(err)
	}
	if p.Format != "oci" || len(p.Images) != 1 || p.Images[0].Target.Digest != md.Digest || p.Images[0].Names[0] != "docker.io/lab/x:1" {
		t.Fatalf("plan %+v", p)
	}
	if p.Images[0].Target.Annotations != nil {
		t.Errorf("the recorded target keeps the archive's annotations: %v", p.Images[0].Target.Annotations)
	}
	if len(p.Blobs) != 3 || len(st.blobs) != 3 {
		t.Fatalf("plan reaches %d blobs, %d staged; want 3", len(p.Blobs), len(st.blobs))
	}
	for d, desc := range p.Blobs {
		if !bytes.Equal(st.blobs[d], blobs[d]) || desc.Size != int64(len(blobs[d])) {
			t.Errorf("blob %s differs after the round trip", d)
		}
	}
}

func TestWriterRefusesWrongBytes(t *testing.T) {
	w := NewWriter(io.Discard)
	d := digest.FromString("right")
	if err := w.WriteBlob(d, 5, strings.NewReader("wrong")); !errors.Is(err, errdefs.ErrDigestMismatch) {
		t.Fatalf("wrong bytes: %v", err)
	}
	if err := w.WriteBlob(d, 5, strings.NewReader("rig")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("short bytes: %v", err)
	}
	if err := w.WriteBlob("md5:abc", 1, strings.NewReader("x")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("non-sha256 digest: %v", err)
	}
}

func TestReadRefusesMembers(t *testing.T) {
	d := digest.FromString("x")
	cases := []struct {
		name string
		e    entry
		want string
	}{
		{"absolute", entry{name: "/etc/passwd", data: []byte("x")}, "absolute"},
		{"dot-dot", entry{name: "a/../../x", data: []byte("x")}, "leaves the archive"},
		{"symlink blob", entry{name: BlobPath(d), typ: tar.TypeSymlink, link: "../../x"}, "where a file must be"},
		{"symlink index.json", entry{name: "index.json", typ: tar.TypeSymlink, link: "x"}, "where a file must be"},
		{"symlink absolute", entry{name: "a/layer.tar", typ: tar.TypeSymlink, link: "/etc/shadow"}, "absolute path"},
		{"symlink escapes", entry{name: "a/layer.tar", typ: tar.TypeSymlink, link: "../../x"}, "outside the archive"},
		{"hard link", entry{name: "a", typ: tar.TypeLink, link: "b"}, "not a regular file"},
		{"device", entry{name: "a", typ: tar.TypeChar}, "not a regular file"},
		{"bad blob name", entry{name: "blobs/sha256/zz", data: []byte("x")}, "not named by its digest"},
		{"other algorithm", entry{name: "blobs/sha512/" + strings.Repeat("a", 128), data: []byte("x")}, "only sha256"},
		{"wrong bytes", entry{name: BlobPath(d), data: []byte("y")}, "digest mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(context.Background(), bytes.NewReader(tarOf(t, []entry{tc.e})), &memStager{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestReadTruncatedAndDuplicates(t *testing.T) {
	big := bytes.Repeat([]byte("layer"), 4000)
	full := tarOf(t, []entry{{name: "x", data: big}})
	for _, cut := range []int{100, 512 + 700, 512 + len(big) - 1} {
		_, err := Read(context.Background(), bytes.NewReader(full[:cut]), &memStager{})
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "truncated") {
			t.Errorf("cut at %d: %v", cut, err)
		}
	}
	dup := tarOf(t, []entry{{name: "a.json", data: []byte("{}")}, {name: "a.json", data: []byte("{ }")}})
	if _, err := Read(context.Background(), bytes.NewReader(dup), &memStager{}); err == nil || !strings.Contains(err.Error(), "appears twice") {
		t.Errorf("duplicate member with other content: %v", err)
	}
}

func TestResolveRefusesIncompleteImages(t *testing.T) {
	md, blobs := image(t, []byte("layer"))
	var m ocispec.Manifest
	json.Unmarshal(blobs[md.Digest], &m)
	layer := m.Layers[0].Digest
	index := func(ds ...ocispec.Descriptor) []byte {
		b, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: ds})
		return b
	}
	entries := func(idx []byte, skip digest.Digest) []entry {
		es := []entry{{name: "index.json", data: idx}}
		for d, b := range blobs {
			if d != skip {
				es = append(es, entry{name: BlobPath(d), data: b})
			}
		}
		return es
	}
	wrongSize := md
	wrongSize.Size++
	nowhere := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("none"), Size: 4}
	cases := []struct {
		name string
		es   []entry
		want string
	}{
		{"unknown format", []entry{{name: "x", data: []byte("x")}}, "unknown archive format"},
		{"index not JSON", []entry{{name: "index.json", data: []byte("[")}}, "not valid JSON"},
		{"layout version", append(entries(index(md), ""), entry{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"9"}`)}), "not supported"},
		{"empty index", entries(index(), ""), "names no images"},
		{"points at nothing", entries(index(nowhere), ""), "not in the archive"},
		{"missing layer", entries(index(md), layer), "missing from the archive"},
		{"wrong size", entries(index(wrongSize), ""), "descriptor says"},
		{"layer is no document", entries(index(ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: layer, Size: 5}), ""), "not a JSON document"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readPlan(t, tarOf(t, tc.es))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// An index may lack some platforms' manifests (an export of one platform)
// but not all of them.
func TestResolvePartialIndex(t *testing.T) {
	md, blobs := image(t, []byte("layer"))
	absent := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("other platform"), Size: 10,
		Platform: &ocispec.Platform{OS: "linux", Architecture: "s390x"}}
	idxBytes, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md, absent}})
	id := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(idxBytes), Size: int64(len(idxBytes)),
		Annotations: map[string]string{AnnotationRefName: "v1"}}
	all := map[digest.Digest][]byte{id.Digest: idxBytes}
	for d, b := range blobs {
		all[d] = b
	}
	p, _, err := readPlan(t, export(t, []ocispec.Descriptor{id}, all, nil))
	if err != nil {
		t.Fatal(err)
	}
	img := p.Images[0]
	if img.Target.Digest != id.Digest || img.RefName != "v1" || len(img.Names) != 0 || len(img.Manifests) != 1 || img.Manifests[0].Digest != md.Digest {
		t.Fatalf("image %+v", img)
	}
	delete(all, md.Digest)
	if _, _, err := readPlan(t, export(t, []ocispec.Descriptor{id}, all, nil)); err == nil || !strings.Contains(err.Error(), "none of its 2 manifests") {
		t.Fatalf("an index without any of its manifests: %v", err)
	}
}

// docker-archive: layers are found through symlinks, typed by their bytes,
// and uncompressed ones must match the config's diff IDs.
func TestResolveDockerArchive(t *testing.T) {
	raw, gz := []byte("uncompressed layer tar"), []byte{0x1f, 0x8b, 8, 0, 0, 0}
	cfg, _ := json.Marshal(ocispec.Image{RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(raw), digest.FromString("whatever gz holds")}}})
	cfgName := digest.FromBytes(cfg).Encoded() + ".json"
	man := func(layers ...string) entry {
		b, _ := json.Marshal([]DockerManifest{{Config: cfgName, RepoTags: []string{"lab/d:1"}, Layers: layers}})
		return entry{name: "manifest.json", data: b}
	}
	base := []entry{
		{name: cfgName, data: cfg},
		{name: "aaa/layer.tar", data: raw},
		{name: "bbb.tar", data: gz},
		{name: "ccc/layer.tar", typ: tar.TypeSymlink, link: "../bbb.tar"},
	}
	p, _, err := readPlan(t, tarOf(t, append(base, man("aaa/layer.tar", "ccc/layer.tar"))))
	if err != nil {
		t.Fatal(err)
	}
	if p.Format != "docker" || len(p.Images) != 1 || p.Images[0].Names[0] != "lab/d:1" {
		t.Fatalf("plan %+v", p)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(p.Generated[p.Images[0].Target.Digest], &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != oci.MediaTypeDockerManifest || m.Config.MediaType != oci.MediaTypeDockerConfig || m.Layers[0].MediaType != oci.MediaTypeDockerLayer ||
		m.Layers[1].MediaType != oci.MediaTypeDockerLayerGzip || m.Layers[1].Digest != digest.FromBytes(gz) {
		t.Fatalf("generated manifest %s", p.Generated[p.Images[0].Target.Digest])
	}
	for _, tc := range []struct {
		name string
		e    entry
		want string
	}{
		{"diff ID mismatch", man("ccc/layer.tar", "aaa/layer.tar"), "diff ID"},
		{"missing layer", man("aaa/layer.tar", "zzz/layer.tar"), "not in the archive"},
		{"layer count", man("aaa/layer.tar"), "2 diff IDs"},
		{"not a list", entry{name: "manifest.json", data: []byte(`{}`)}, "not a docker-archive manifest"},
	} {
		if _, _, err := readPlan(t, tarOf(t, append(append([]entry{}, base...), tc.e))); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestTarDir(t *testing.T) {
	md, blobs := image(t, []byte("layer"))
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
	for d, b := range blobs {
		os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), b, 0o444)
	}
	md.Annotations = map[string]string{AnnotationRefName: "lab/dir:2"}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []ocispec.Descriptor{md}})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	var buf bytes.Buffer
	if err := TarDir(context.Background(), dir, &buf); err != nil {
		t.Fatal(err)
	}
	p, _, err := readPlan(t, buf.Bytes())
	if err != nil || len(p.Images) != 1 || p.Images[0].RefName != "lab/dir:2" || len(p.Blobs) != 3 {
		t.Fatalf("%+v %v", p, err)
	}
	// A link where a blob must be is refused on the read side.
	os.Symlink("/etc/passwd", filepath.Join(dir, "blobs", "sha256", strings.Repeat("a", 64)))
	buf.Reset()
	if err := TarDir(context.Background(), dir, &buf); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readPlan(t, buf.Bytes()); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("layout with a symlinked blob: %v", err)
	}
}

// docker save since 25.0 writes an OCI layout whose index.json entries may
// lack names; manifest.json's RepoTags name them then.
func TestResolveNamesFromDockerManifest(t *testing.T) {
	md, blobs := image(t, []byte("uncompressed layer"))
	var m ocispec.Manifest
	json.Unmarshal(blobs[md.Digest], &m)
	docker := []DockerManifest{{Config: BlobPath(m.Config.Digest), RepoTags: []string{"lab/saved:1"}, Layers: []string{BlobPath(m.Layers[0].Digest)}}}
	p, _, err := readPlan(t, export(t, []ocispec.Descriptor{md}, blobs, docker))
	if err != nil {
		t.Fatal(err)
	}
	if p.Format != "oci" || len(p.Images) != 1 || len(p.Images[0].Names) != 1 || p.Images[0].Names[0] != "lab/saved:1" || len(p.Generated) != 0 {
		t.Fatalf("plan %+v", p)
	}
}
