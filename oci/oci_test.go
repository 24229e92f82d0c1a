package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
)

func TestMediaTypePredicates(t *testing.T) {
	for _, tc := range []struct {
		mt                                   string
		index, manifest, config, layer, sch1 bool
		comp                                 Compression
	}{
		{mt: ocispec.MediaTypeImageIndex, index: true},
		{mt: MediaTypeDockerManifestList, index: true},
		{mt: ocispec.MediaTypeImageManifest, manifest: true},
		{mt: MediaTypeDockerManifest, manifest: true},
		{mt: ocispec.MediaTypeImageConfig, config: true},
		{mt: MediaTypeDockerConfig, config: true},
		{mt: MediaTypeDockerSchema1Signed, sch1: true},
		{mt: ocispec.MediaTypeImageLayer, layer: true, comp: Uncompressed},
		{mt: ocispec.MediaTypeImageLayerGzip, layer: true, comp: Gzip},
		{mt: ocispec.MediaTypeImageLayerZstd, layer: true, comp: Zstd},
		{mt: MediaTypeDockerLayerGzip, layer: true, comp: Gzip},
		{mt: MediaTypeDockerLayer, layer: true, comp: Uncompressed},
		{mt: MediaTypeLayerNonDistributableZstd, layer: true, comp: Zstd},
		{mt: "application/vnd.example+json"},
	} {
		c, ok := LayerCompression(tc.mt)
		got := fmt.Sprint(IsIndex(tc.mt), IsManifest(tc.mt), IsConfig(tc.mt), IsLayer(tc.mt), IsSchema1(tc.mt), ok)
		want := fmt.Sprint(tc.index, tc.manifest, tc.config, tc.layer, tc.sch1, tc.layer)
		if got != want || (ok && c != tc.comp) {
			t.Errorf("%s: index manifest config layer schema1 ok = %s (compression %d), want %s (%d)", tc.mt, got, c, want, tc.comp)
		}
	}
}

func TestSniff(t *testing.T) {
	for in, want := range map[string]string{
		`{"mediaType":"x/y"}`:                  "x/y",
		`{"schemaVersion":1,"fsLayers":[]}`:    MediaTypeDockerSchema1,
		`{"schemaVersion":2,"manifests":[]}`:   ocispec.MediaTypeImageIndex,
		`{"schemaVersion":2,"config":{}}`:      ocispec.MediaTypeImageManifest,
		`not json`:                             "",
		`{"schemaVersion":2,"annotations":{}}`: "",
	} {
		if got := Sniff([]byte(in)); got != want {
			t.Errorf("Sniff(%s) = %q, want %q", in, got, want)
		}
	}
}

// docs is an in-memory set of documents for walks.
type docs map[digest.Digest][]byte

func (d docs) add(t *testing.T, mt string, v any) ocispec.Descriptor {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dg := digest.FromBytes(b)
	d[dg] = b
	return ocispec.Descriptor{MediaType: mt, Digest: dg, Size: int64(len(b))}
}

func (d docs) read(_ context.Context, desc ocispec.Descriptor) ([]byte, error) {
	b, ok := d[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("%s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	return b, nil
}

func blob(s string) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString(s), Size: int64(len(s))}
}

func manifest(t *testing.T, d docs, name string, subject *ocispec.Descriptor) ocispec.Descriptor {
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("cfg " + name), Size: 3}
	return d.add(t, ocispec.MediaTypeImageManifest, ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, Config: cfg,
		Layers: []ocispec.Descriptor{blob(name + " 0"), blob(name + " 1")}, Subject: subject,
	})
}

func withPlatform(d ocispec.Descriptor, os, arch, variant string) ocispec.Descriptor {
	d.Platform = &ocispec.Platform{OS: os, Architecture: arch, Variant: variant}
	return d
}

func TestChildrenIncludeSubjectLast(t *testing.T) {
	d := docs{}
	base := manifest(t, d, "base", nil)
	sig := manifest(t, d, "sig", &base)
	doc, err := Parse(ocispec.Descriptor{Digest: sig.Digest, Size: sig.Size}, d[sig.Digest])
	if err != nil {
		t.Fatal(err)
	}
	if doc.Desc.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("sniffed media type %q", doc.Desc.MediaType)
	}
	c := doc.Children()
	if len(c) != 4 || c[0].Digest != digest.FromString("cfg sig") || c[1].Digest != blob("sig 0").Digest || c[3].Digest != base.Digest {
		t.Errorf("children = %v", c)
	}
	if p := doc.Parts(); len(p) != 3 || p[2].Digest != blob("sig 1").Digest {
		t.Errorf("parts = %v", p)
	}
	if c, err := Children(blob("x"), nil); err != nil || c != nil {
		t.Errorf("children of a layer = %v, %v", c, err)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, mt, data string
		want           error
		text           string
	}{
		{"schema1", MediaTypeDockerSchema1Signed, `{}`, errdefs.ErrNotImplemented, "schema1 manifests are not supported"},
		{"unknown", "application/vnd.example.thing+json", `{}`, errdefs.ErrNotImplemented, `unsupported manifest media type "application/vnd.example.thing+json"`},
		{"bad json", ocispec.MediaTypeImageIndex, `{"manifests":`, errdefs.ErrInvalidArgument, "is not valid JSON"},
		{"bad child", ocispec.MediaTypeImageIndex, `{"manifests":[{"digest":"sha256:zz","size":1}]}`, errdefs.ErrInvalidArgument, `bad descriptor "sha256:zz"`},
		{"negative size", ocispec.MediaTypeImageManifest, `{"config":{"digest":"` + digest.FromString("c").String() + `","size":-1}}`, errdefs.ErrInvalidArgument, "size -1"},
	} {
		_, err := Parse(ocispec.Descriptor{MediaType: tc.mt, Digest: digest.FromString(tc.data)}, []byte(tc.data))
		if !errors.Is(err, tc.want) || err == nil || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: err = %v, want %v containing %q", tc.name, err, tc.want, tc.text)
		}
	}
}

func TestWalkNestedIndexEachDigestOnce(t *testing.T) {
	d := docs{}
	amd := withPlatform(manifest(t, d, "amd", nil), "linux", "amd64", "")
	arm := withPlatform(manifest(t, d, "arm", nil), "linux", "arm64", "v8")
	inner := d.add(t, ocispec.MediaTypeImageIndex, ocispec.Index{Manifests: []ocispec.Descriptor{arm, amd}})
	outer := d.add(t, ocispec.MediaTypeImageIndex, ocispec.Index{Manifests: []ocispec.Descriptor{inner, amd}})
	var seen []digest.Digest
	h := childrenHandler(d.read)
	err := Walk(context.Background(), HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		seen = append(seen, desc.Digest)
		return h(ctx, desc)
	}), outer)
	if err != nil {
		t.Fatal(err)
	}
	// outer, inner, arm + config + 2 layers, amd + config + 2 layers.
	want := []digest.Digest{outer.Digest, inner.Digest, arm.Digest, digest.FromString("cfg arm"), blob("arm 0").Digest, blob("arm 1").Digest,
		amd.Digest, digest.FromString("cfg amd"), blob("amd 0").Digest, blob("amd 1").Digest}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("walk order\n got %v\nwant %v", seen, want)
	}
	mans, err := Manifests(context.Background(), d.read, outer, nil)
	if err != nil || len(mans) != 2 || mans[0].Digest != arm.Digest || mans[1].Digest != amd.Digest {
		t.Errorf("Manifests = %v, %v; want arm then amd", mans, err)
	}
	arm64 := NewPlatform(ocispec.Platform{OS: "linux", Architecture: "arm64"})
	mans, err = Manifests(context.Background(), d.read, outer, arm64.Select)
	if err != nil || len(mans) != 1 || mans[0].Digest != arm.Digest {
		t.Errorf("Manifests for linux/arm64 = %v, %v; want the arm64/v8 one", mans, err)
	}
}

func TestWalkRefusesCyclesAndDepth(t *testing.T) {
	d := docs{}
	// An index that names itself cannot be built by hashing, so the
	// reader lies: every index read returns one that points at "self".
	self := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("self"), Size: 1}
	loop, _ := json.Marshal(ocispec.Index{Manifests: []ocispec.Descriptor{self}})
	d[self.Digest] = loop
	err := Walk(context.Background(), childrenHandler(d.read), self)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "references itself") {
		t.Errorf("cycle: err = %v", err)
	}
	// A chain of indexes deeper than MaxDepth.
	next := manifest(t, d, "bottom", nil)
	for range MaxDepth + 1 {
		next = d.add(t, ocispec.MediaTypeImageIndex, ocispec.Index{Manifests: []ocispec.Descriptor{next}})
	}
	err = Walk(context.Background(), childrenHandler(d.read), next)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "nested deeper than") {
		t.Errorf("depth: err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Walk(ctx, childrenHandler(d.read), next); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled walk: err = %v", err)
	}
}

func TestPlatformChoice(t *testing.T) {
	d := docs{}
	amd := withPlatform(manifest(t, d, "amd", nil), "linux", "amd64", "")
	i386 := withPlatform(manifest(t, d, "386", nil), "linux", "386", "")
	armv8 := withPlatform(manifest(t, d, "arm64v8", nil), "linux", "arm64", "v8")
	armv7 := withPlatform(manifest(t, d, "armv7", nil), "linux", "arm", "v7")
	armv6 := withPlatform(manifest(t, d, "armv6", nil), "linux", "arm", "v6")
	nested := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("nested")}
	entries := []ocispec.Descriptor{i386, armv6, nested, amd, armv7, armv8, {MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("none")}}
	for _, tc := range []struct {
		platform string
		want     ocispec.Descriptor
	}{
		{"linux/amd64", amd},
		{"linux/386", i386},
		{"linux/arm64", armv8},
		{"linux/arm64/v8", armv8},
		{"linux/arm/v7", armv7},
		{"linux/arm/v6", armv6},
	} {
		p, err := ParsePlatform(tc.platform, HostPlatform())
		if err != nil {
			t.Fatal(err)
		}
		pl := NewPlatform(p)
		i := pl.Best(entries)
		if i < 0 || entries[i].Digest != tc.want.Digest {
			t.Errorf("%s: best = %d, want %s", tc.platform, i, FormatPlatform(tc.want.Platform))
		}
		// Select keeps index order: the nested index and the best manifest.
		sel := pl.Select(entries)
		var got []digest.Digest
		for _, s := range sel {
			got = append(got, s.Digest)
		}
		want := []digest.Digest{nested.Digest, tc.want.Digest}
		if i < 2 {
			want = []digest.Digest{tc.want.Digest, nested.Digest}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: select = %v, want %v", tc.platform, got, want)
		}
	}
	if i := NewPlatform(ocispec.Platform{OS: "linux", Architecture: "s390x"}).Best(entries); i != -1 {
		t.Errorf("s390x matched entry %d", i)
	}
	// A manifest with no platform matches nothing (it is chosen by the
	// caller when it is the only one).
	if NewPlatform(HostPlatform()).Match(nil) {
		t.Error("nil platform matched")
	}
}

func TestParsePlatform(t *testing.T) {
	host := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	for in, want := range map[string]string{
		"":               "linux/arm64",
		"linux/amd64":    "linux/amd64",
		"Linux/ARM64":    "linux/arm64",
		"linux/arm64/v8": "linux/arm64",
		"linux/aarch64":  "linux/arm64",
		"linux/arm":      "linux/arm/v7",
	} {
		p, err := ParsePlatform(in, host)
		if err != nil || FormatPlatform(&p) != want {
			t.Errorf("ParsePlatform(%q) = %q, %v; want %q", in, FormatPlatform(&p), err, want)
		}
	}
	for _, in := range []string{"linux", "/amd64", "linux/", "a/b/c/d"} {
		_, err := ParsePlatform(in, host)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "want os/arch[/variant]") {
			t.Errorf("ParsePlatform(%q): err = %v", in, err)
		}
	}
	if FormatPlatform(nil) != "" {
		t.Error("FormatPlatform(nil) not empty")
	}
}
