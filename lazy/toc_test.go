package lazy

import (
	"bytes"
	"context"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
)

// TestTOCJSONSizeHint: the buffer guessed for a TOC's JSON holds it
// without regrowing (gzip: the stream's own size field, that of the TOC's
// tar entry; zstd: 10 times the compressed TOC), and the TOC read into it
// is the one pinned.
func TestTOCJSONSizeHint(t *testing.T) {
	inFormats(t, func(t *testing.T, format string) {
		desc, blob := buildBlobAs(t, format, testFiles(), 0)
		rb := &remoteBlob{blob: blob}
		tl, f, err := fetchTail(context.Background(), rb.read, desc.Size)
		if err != nil {
			t.Fatal(err)
		}
		want := digest.Digest(desc.Annotations[TOCDigestAnnotation])
		js, check, err := tocJSON(tl, f, want)
		if err != nil {
			t.Fatal(err)
		}
		if err := check(); err != nil {
			t.Fatal(err)
		}
		hint := jsonSizeHint(tl, f)
		if hint < len(js) {
			t.Fatalf("hint %d bytes for a TOC of %d", hint, len(js))
		}
		if format == "estargz" && hint-len(js) > 2048 {
			t.Fatalf("gzip hint %d bytes for a TOC of %d: more than its tar header, padding and end", hint, len(js))
		}
	})
}

// TestReadAllSized: whatever the hint, the bytes read are the reader's.
func TestReadAllSized(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000) // parts of readPart and a last, shorter one
	for _, hint := range []int{0, 1, len(data) - 1, len(data), len(data) + 1, 4 * len(data)} {
		var handed []byte
		got, err := readAllSized(iotest.OneByteReader(bytes.NewReader(data)), hint, func(p []byte) { handed = append(handed, p...) })
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("hint %d: %d bytes, %v; want the %d bytes", hint, len(got), err, len(data))
		}
		if !bytes.Equal(handed, data) {
			t.Fatalf("hint %d: %d bytes handed over, want the %d read", hint, len(handed), len(data))
		}
		if hint >= len(data) && cap(got) != hint+1 {
			t.Fatalf("hint %d: buffer regrew to %d", hint, cap(got))
		}
	}
	if _, err := readAllSized(iotest.ErrReader(iotest.ErrTimeout), 10, func([]byte) {}); err != iotest.ErrTimeout {
		t.Fatalf("error %v, want %v", err, iotest.ErrTimeout)
	}
}
