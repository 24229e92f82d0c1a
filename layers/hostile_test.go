package layers

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/oci"
)

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha(string(b))
}

func TestApplyRefusesEscapes(t *testing.T) {
	requireRoot(t)
	passwd := fileSum(t, "/etc/passwd")
	cases := []struct {
		name  string
		ents  func(base string) []tent
		entry string // "" when the layer is accepted (but must stay inside)
	}{
		{"dotdot", func(string) []tent { return []tent{tFile("../sentinel/evil", 0o644, "x")} }, "../sentinel/evil"},
		{"dotdot inside the name", func(string) []tent { return []tent{tFile("a/../../sentinel/evil", 0o644, "x")} }, "a/../../sentinel/evil"},
		{"absolute dotdot", func(string) []tent { return []tent{tFile("/../sentinel/evil", 0o644, "x")} }, "/../sentinel/evil"},
		{"dotdot directory", func(string) []tent { return []tent{tDir("../sentinel/d", 0o755)} }, "../sentinel/d/"},
		{"dotdot symlink", func(string) []tent { return []tent{tSym("../sentinel/l", "/etc")} }, "../sentinel/l"},
		{"relative symlink in a parent", func(string) []tent {
			return []tent{tSym("s", "../sentinel"), tFile("s/evil", 0o644, "x")}
		}, "s/evil"},
		{"absolute symlink in a parent", func(base string) []tent {
			return []tent{tSym("s", filepath.Join(base, "sentinel")), tFile("s/evil", 0o644, "x")}
		}, "s/evil"},
		{"symlink in a deeper parent", func(string) []tent {
			return []tent{tDir("d", 0o755), tSym("d/s", "../../sentinel"), tDir("d/s/sub", 0o755)}
		}, "d/s/sub/"},
		{"hardlink to a sibling", func(string) []tent { return []tent{tHard("h", "../victim")} }, "h"},
		{"hardlink to /etc/passwd", func(string) []tent { return []tent{tHard("h", "../../../../../../../etc/passwd")} }, "h"},
		{"hardlink through a symlink", func(base string) []tent {
			return []tent{tSym("s", base), tHard("h", "s/victim")}
		}, "h"},
		{"hardlink through a relative symlink", func(string) []tent {
			return []tent{tSym("s", ".."), tHard("h", "s/victim")}
		}, "h"},
		{"device through a symlink", func(string) []tent {
			return []tent{tSym("s", "../sentinel"), tChar("s/null", 1, 3)}
		}, "s/null"},
		{"whiteout names a parent", func(string) []tent { return []tent{tFile("a/.wh..", 0o644, "")} }, "a/.wh.."},
		// Accepted, but nothing may happen outside.
		{"file replaces a symlink to the victim", func(base string) []tent {
			return []tent{tSym("v", filepath.Join(base, "victim")), tFile("v", 0o644, "replaced")}
		}, ""},
		{"hardlink to a symlink links the symlink", func(base string) []tent {
			return []tent{tSym("s", filepath.Join(base, "victim")), tHard("h", "s")}
		}, ""},
		{"whiteout and opaque marker below a symlink", func(string) []tent {
			return []tent{tSym("s", "../sentinel"), tWh("s/x"), tOpq("s")}
		}, ""},
		{"absolute names stay inside", func(string) []tent { return []tent{tFile("/victim", 0o644, "inside")} }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			snap, sentinel, victim := filepath.Join(base, "snap"), filepath.Join(base, "sentinel"), filepath.Join(base, "victim")
			for _, d := range []string{snap, sentinel} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(victim, []byte("original"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Apply(context.Background(), snap, bytes.NewReader(mkTar(t, tc.ents(base)...)), ApplyOptions{})
			if tc.entry == "" {
				if err != nil {
					t.Fatalf("refused a harmless layer: %v", err)
				}
			} else {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("got %v, want an error wrapping ErrInvalidArgument", err)
				}
				if !strings.Contains(err.Error(), `"`+tc.entry+`"`) {
					t.Errorf("error %q does not name entry %q", err, tc.entry)
				}
			}
			if ents, _ := os.ReadDir(sentinel); len(ents) != 0 {
				t.Errorf("sentinel dir has %d entries", len(ents))
			}
			if b, _ := os.ReadFile(victim); string(b) != "original" {
				t.Errorf("victim now holds %q", b)
			}
			if fi, err := os.Lstat(victim); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("victim changed type: %v", err)
			}
			if ents, _ := os.ReadDir(base); len(ents) != 3 {
				t.Errorf("base dir has %d entries, want snap, sentinel, victim", len(ents))
			}
			if got := fileSum(t, "/etc/passwd"); got != passwd {
				t.Error("/etc/passwd changed")
			}
		})
	}
}

func TestApplyDropsForgedOverlayXattrs(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	ents := []tent{tDir("d", 0o755).x("trusted.overlay.opaque", "y").x("user.ok", "1")}
	if _, err := Apply(context.Background(), dir, bytes.NewReader(mkTar(t, ents...)), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	xs, err := listXattrs(filepath.Join(dir, "d"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := xs["trusted.overlay.opaque"]; ok || string(xs["user.ok"]) != "1" {
		t.Errorf("xattrs %v: want user.ok and no trusted.overlay.opaque", xs)
	}
}

func randomBytes(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func zst(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// unpack decompresses and applies blob into a fresh dir.
func unpack(t *testing.T, mediaType string, blob []byte, opts ApplyOptions) (ApplyResult, error) {
	t.Helper()
	rc, err := Decompress(mediaType, bytes.NewReader(blob))
	if err != nil {
		return ApplyResult{}, err
	}
	defer rc.Close()
	return Apply(context.Background(), t.TempDir(), rc, opts)
}

func TestApplyRefusesTruncatedAndBombs(t *testing.T) {
	requireRoot(t)
	tarBlob := mkTar(t, tFile("big", 0o644, randomBytes(t, 100_000)), tFile("small", 0o644, "s"))
	// Four times the 1 MiB limit below: enough to trip it part way through.
	zeros := mkTar(t, tFile("zeros", 0o644, string(make([]byte, 4<<20))))
	gzTar, zstTar, gzZeros, zstZeros := gz(t, tarBlob), zst(t, tarBlob), gz(t, zeros), zst(t, zeros)
	var many []tent
	for i := 0; i < 50; i++ {
		many = append(many, tFile(strings.Repeat("f", i+1), 0o644, ""))
	}
	cases := []struct {
		name, mediaType string
		blob            []byte
		opts            ApplyOptions
		want            error
		text            string
	}{
		{"gzip cut in half", ocispec.MediaTypeImageLayerGzip, gzTar[:len(gzTar)/2], ApplyOptions{}, io.ErrUnexpectedEOF, ""},
		{"gzip without its trailer", ocispec.MediaTypeImageLayerGzip, gzTar[:len(gzTar)-4], ApplyOptions{}, io.ErrUnexpectedEOF, ""},
		{"zstd cut in half", ocispec.MediaTypeImageLayerZstd, zstTar[:len(zstTar)/2], ApplyOptions{}, io.ErrUnexpectedEOF, ""},
		{"tar cut inside a file", ocispec.MediaTypeImageLayer, tarBlob[:50_000], ApplyOptions{}, io.ErrUnexpectedEOF, ""},
		{"tar cut at a block boundary", ocispec.MediaTypeImageLayer, tarBlob[:len(tarBlob)-1024], ApplyOptions{}, io.ErrUnexpectedEOF, "end-of-archive"},
		{"empty blob", ocispec.MediaTypeImageLayer, nil, ApplyOptions{}, io.ErrUnexpectedEOF, ""},
		{"gzip bomb", ocispec.MediaTypeImageLayerGzip, gzZeros, ApplyOptions{MaxBytes: 1 << 20}, errdefs.ErrFailedPrecondition, "layer exceeds the limit of 1048576 unpacked bytes (decompression bomb?)"},
		{"zstd bomb", ocispec.MediaTypeImageLayerZstd, zstZeros, ApplyOptions{MaxBytes: 1 << 20}, errdefs.ErrFailedPrecondition, "layer exceeds the limit of 1048576 unpacked bytes (decompression bomb?)"},
		{"too many entries", ocispec.MediaTypeImageLayer, mkTar(t, many...), ApplyOptions{MaxEntries: 10}, errdefs.ErrFailedPrecondition, "layer exceeds the limit of 10 entries"},
		{"unknown media type", "application/vnd.oci.image.layer.v1.tar+lz4", tarBlob, ApplyOptions{}, errdefs.ErrNotImplemented, "application/vnd.oci.image.layer.v1.tar+lz4"},
		{"config is not a layer", "application/vnd.oci.image.config.v1+json", tarBlob, ApplyOptions{}, errdefs.ErrNotImplemented, "config"},
	}
	if len(zstZeros) > 64<<10 || len(gzZeros) > 64<<10 {
		t.Fatal("bomb blobs are not small")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := unpack(t, tc.mediaType, tc.blob, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q lacks %q", err, tc.text)
			}
		})
	}
}

func TestDecompressMediaTypes(t *testing.T) {
	requireRoot(t)
	tarBlob := mkTar(t, tFile("a", 0o644, "hello"))
	plain := []string{ocispec.MediaTypeImageLayer, oci.MediaTypeLayerNonDistributable, oci.MediaTypeDockerLayer}
	gzipped := []string{ocispec.MediaTypeImageLayerGzip, oci.MediaTypeLayerNonDistributableGzip, oci.MediaTypeDockerLayerGzip, oci.MediaTypeDockerForeignLayerGzip}
	zstded := []string{ocispec.MediaTypeImageLayerZstd, oci.MediaTypeLayerNonDistributableZstd}
	check := func(mt string, blob []byte) {
		if !oci.IsLayer(mt) {
			t.Errorf("IsLayer(%s) = false", mt)
		}
		res, err := unpack(t, mt, blob, ApplyOptions{})
		if err != nil {
			t.Fatalf("%s: %v", mt, err)
		}
		if want := sha256Digest(tarBlob); res.DiffID != want {
			t.Errorf("%s: diff id %s, want %s", mt, res.DiffID, want)
		}
	}
	for _, mt := range plain {
		check(mt, tarBlob)
	}
	for _, mt := range gzipped {
		check(mt, gz(t, tarBlob))
	}
	for _, mt := range zstded {
		check(mt, zst(t, tarBlob))
	}
	for _, mt := range []string{"", "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.layer.v1.tar+bzip2"} {
		if oci.IsLayer(mt) {
			t.Errorf("IsLayer(%q) = true", mt)
		}
	}
}

// A lower layer's symlink that points out of the root is resolved inside
// it: what the upper layer writes through it stays in the upper layer.
func TestApplyLowerSymlinksStayInside(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lower, upper, sentinel := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "sentinel")
	for _, d := range []string{lower, upper, sentinel} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"abs": sentinel, "rel": "../sentinel", "loop": "loop2", "loop2": "loop"} {
		if err := os.Symlink(target, filepath.Join(lower, name)); err != nil {
			t.Fatal(err)
		}
	}
	layer := mkTar(t, tFile("abs/a", 0o644, "a"), tFile("rel/b", 0o644, "b"), tHard("c", "rel/b"))
	if _, err := Apply(context.Background(), upper, bytes.NewReader(layer), ApplyOptions{Lowers: []string{lower}}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(sentinel); len(ents) != 0 {
		t.Errorf("sentinel dir has %d entries", len(ents))
	}
	for _, p := range []string{filepath.Join(sentinel[1:], "a"), "sentinel/b", "c"} {
		if _, err := os.Lstat(filepath.Join(upper, p)); err != nil {
			t.Errorf("%s not in the upper layer: %v", p, err)
		}
	}
	_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(mkTar(t, tFile("loop/x", 0o644, ""))), ApplyOptions{Lowers: []string{lower}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "symlinks") {
		t.Errorf("symlink loop: %v", err)
	}
}
