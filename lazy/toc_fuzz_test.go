package lazy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/layers/merged"
)

// FuzzOpenTOC feeds hostile TOCs, correctly pinned by their digest, behind
// real gzip data: opening the layer, listing it, building its tree and
// reading every file must fail cleanly or succeed, never panic or hang.
func FuzzOpenTOC(f *testing.F) {
	data, js := splitTOC(f)
	f.Add(js)
	f.Add([]byte(`{"version":1,"entries":[{"name":"../../etc/passwd","type":"reg","size":5,"offset":10}]}`))
	f.Add([]byte(`{"version":1,"entries":[{"name":"a","type":"dir"},{"name":"a/b","type":"hardlink","linkName":"a"}]}`))
	f.Add([]byte(`{"version":1,"entries":[{"name":"x","type":"reg","size":1099511627776,"offset":1,"chunkSize":1099511627776}]}`))
	f.Fuzz(func(t *testing.T, js []byte) {
		desc, blob, ok := withTOC(data, js)
		if !ok {
			return
		}
		l, err := openLayer(t, desc, &remoteBlob{blob: blob}, t.TempDir())
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, errdefs.ErrDigestMismatch) {
				t.Fatalf("open: unclassified error %v", err)
			}
			return
		}
		var ents []merged.Entry
		if err := l.Walk(context.Background(), func(e *merged.Entry) error { ents = append(ents, *e); return nil }); err != nil {
			t.Fatalf("walk: %v", err)
		}
		if _, err := merged.BuildLayers(context.Background(), []merged.Layer{l}); err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for _, e := range ents {
			if !e.Attr.IsRegular() || e.Attr.Size > 1<<20 {
				continue
			}
			ra, err := l.Open(context.Background(), e.Path)
			if err != nil {
				continue
			}
			for off := int64(0); off < e.Attr.Size; off += int64(len(buf)) {
				if _, err := ra.ReadAt(buf, off); err != nil {
					break
				}
			}
		}
	})
}

// splitTOC builds a small eStargz blob and returns its chunks and its
// TOC's JSON.
func splitTOC(t testing.TB) (data, js []byte) {
	_, blob := buildBlob(t, testFiles()[:5], 0)
	tocOff, _, err := estargz.OpenFooter(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := new(estargz.GzipDecompressor).DecompressTOC(bytes.NewReader(blob[tocOff : int64(len(blob))-estargz.FooterSize]))
	if err != nil {
		t.Fatal(err)
	}
	js, err = io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return blob[:tocOff], js
}

// withTOC is an eStargz blob of data's chunks and the TOC js (false: js
// is not a TOC the upstream writer takes), its TOC pinned by its digest.
func withTOC(data, js []byte) (ocispec.Descriptor, []byte, bool) {
	var toc estargz.JTOC
	if json.Unmarshal(js, &toc) != nil {
		return ocispec.Descriptor{}, nil, false
	}
	var b bytes.Buffer
	b.Write(data)
	dg, err := estargz.NewGzipCompressor().WriteTOCAndFooter(&b, int64(len(data)), &toc, nil)
	if err != nil {
		return ocispec.Descriptor{}, nil, false
	}
	blob := b.Bytes()
	return ocispec.Descriptor{Digest: digest.FromBytes(blob), Size: int64(len(blob)), Annotations: map[string]string{TOCDigestAnnotation: dg.String()}}, blob, true
}

// FuzzParseFooter feeds hostile blob tails in every footer format: a
// footer is refused with ErrInvalidArgument or puts the TOC inside the
// blob, after the chunks and before the footer, never anything else.
func FuzzParseFooter(f *testing.F) {
	for _, format := range []string{"estargz", "zstdchunked"} {
		_, blob := buildBlobAs(f, format, testFiles()[:3], 0)
		f.Add(blob[max(0, len(blob)-maxFooterSize):], int64(len(blob)))
	}
	f.Add(make([]byte, maxFooterSize), int64(1<<40))
	f.Fuzz(func(t *testing.T, last []byte, size int64) {
		if size < int64(len(last)) {
			return
		}
		ft, err := parseFooter(last, size)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		n := ft.dec.FooterSize()
		if ft.payloadEnd < 0 || ft.payloadEnd > ft.tocOff || ft.tocOff <= 0 || ft.tocEnd <= ft.tocOff || ft.tocEnd > size-n || size-ft.tocOff > maxTOCCompressed {
			t.Fatalf("footer of a %d-byte blob accepted with chunks to %d, TOC %d-%d", size, ft.payloadEnd, ft.tocOff, ft.tocEnd)
		}
	})
}
