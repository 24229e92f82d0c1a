// Package lazy serves eStargz layers before they are downloaded: it fetches
// a layer's footer and table of contents (TOC) with HTTP Range requests,
// verifies the TOC against the digest its manifest pins, lists the layer's
// entries for the merged rootfs tree, and reads files chunk by chunk, each
// chunk verified against its TOC digest and kept on disk for later reads.
//
// The format itself is the upstream estargz package's; this package adds
// bounds for untrusted input, the on-disk cache and the verification of
// every byte served.
package lazy

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
)

// TOCDigestAnnotation on a layer descriptor pins the digest of the layer's
// TOC JSON: a layer with it is served lazily.
const TOCDigestAnnotation = estargz.TOCJSONDigestAnnotation

// Bounds on untrusted TOCs.
const (
	// maxTOCCompressed bounds the compressed TOC with its footer.
	maxTOCCompressed = 64 << 20
	// maxTOCJSON bounds the TOC JSON once decompressed.
	maxTOCJSON = 256 << 20
	// maxEntries bounds the TOC's entries.
	maxEntries = 4 << 20
	// The first request reads a guess of the tail of a blob, footer and
	// TOC in one round trip: 1/64 of the blob within these bounds. A
	// larger TOC costs one more request for exactly the rest. A TOC is
	// typically 0.8-1.5% of its layer, more for a small layer of tiny
	// files (3.4% for the bench's 3 MB layer of 2,000), so the guess
	// covers most in one request, at the price of fetching up to as much
	// again that is not TOC (not stored): a second request to a registry
	// reading cold was 14-55 ms, up to a fifth of a lazy start, while the
	// bytes cost little.
	minTailGuess = 128 << 10
	maxTailGuess = 1 << 20
)

// RangeReader fills p with the bytes at off of one layer blob, from its
// registry. The caller owns p: the layer reuses its buffers.
type RangeReader func(ctx context.Context, off int64, p []byte) error

// tail is the end of a layer blob: the compressed TOC and the footer.
type tail struct {
	off  int64
	data []byte
}

// ReadAt serves the tail alone: estargz.Open is pointed at it and only
// reads the footer and the TOC.
func (t tail) ReadAt(p []byte, off int64) (int, error) {
	if off < t.off || off-t.off > int64(len(t.data)) {
		return 0, fmt.Errorf("read at %d outside the fetched TOC: %w", off, errdefs.ErrInvalidArgument)
	}
	n := copy(p, t.data[off-t.off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// tocDecompressor is one footer and TOC format: eStargz's gzip, its legacy
// gzip footer, or zstd:chunked.
type tocDecompressor interface {
	estargz.Decompressor
	DecompressTOC(io.Reader) (io.ReadCloser, error)
}

// formats are the formats a footer is tried against, the largest footer
// first: the tail fetched always covers it.
var formats = []tocDecompressor{new(gzipDecompressor), new(estargz.LegacyGzipDecompressor), new(zstdchunked.Decompressor)}

// maxFooterSize is the largest footer of formats.
const maxFooterSize = estargz.FooterSize

// footer is where a blob's parts lie, from its footer.
type footer struct {
	dec            tocDecompressor
	payloadEnd     int64 // the chunks end here
	tocOff, tocEnd int64 // the compressed TOC
}

// parseFooter finds the format whose footer ends last (the blob's last
// bytes, size in all) and where it puts the TOC.
func parseFooter(last []byte, size int64) (footer, error) {
	var errs []error
	for _, d := range formats {
		n := d.FooterSize()
		if int64(len(last)) < n || size < n {
			continue
		}
		payload, tocOff, tocSize, err := safeParseFooter(d, last[int64(len(last))-n:])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f := footer{dec: d, payloadEnd: payload, tocOff: tocOff, tocEnd: size - n}
		if tocSize > 0 {
			f.tocEnd = tocOff + tocSize
		}
		switch {
		case tocOff <= 0 || f.tocEnd <= tocOff || f.tocEnd > size-n || payload < 0 || payload > tocOff:
			return footer{}, fmt.Errorf("eStargz footer puts the TOC at %d-%d, outside the layer's %d bytes: %w", tocOff, f.tocEnd, size, errdefs.ErrInvalidArgument)
		case size-tocOff > maxTOCCompressed:
			return footer{}, fmt.Errorf("eStargz TOC of %d bytes is over the limit of %d: %w", size-tocOff, maxTOCCompressed, errdefs.ErrInvalidArgument)
		}
		return f, nil
	}
	return footer{}, fmt.Errorf("malformed eStargz footer: %v: %w", errors.Join(errs...), errdefs.ErrInvalidArgument)
}

// safeParseFooter is d.ParseFooter turning a panic into an error: the
// upstream gzip footer parser indexes past a gzip extra field that is
// shorter than the length it declares, and a footer is untrusted input.
func safeParseFooter(d tocDecompressor, p []byte) (payload, tocOff, tocSize int64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("footer parser failed: %v", r)
		}
	}()
	return d.ParseFooter(p)
}

// fetchTail reads footer and TOC of a blob of size bytes: one request
// when the TOC fits in tailGuess, two otherwise.
func fetchTail(ctx context.Context, remote RangeReader, size int64) (tail, footer, error) {
	if size < 40 {
		return tail{}, footer{}, fmt.Errorf("layer of %d bytes is too small for an eStargz footer: %w", size, errdefs.ErrInvalidArgument)
	}
	n := min(size, max(minTailGuess, min(maxTailGuess, size/64)))
	b := make([]byte, n)
	err := remote(ctx, size-n, b)
	if err != nil {
		return tail{}, footer{}, fmt.Errorf("fetch eStargz footer: %w", err)
	}
	t := tail{off: size - n, data: b}
	f, err := parseFooter(b, size)
	if err != nil {
		return tail{}, footer{}, err
	}
	if f.tocOff < t.off {
		rest := make([]byte, t.off-f.tocOff, int64(len(b))+t.off-f.tocOff)
		err := remote(ctx, f.tocOff, rest)
		if err != nil {
			return tail{}, footer{}, fmt.Errorf("fetch eStargz TOC: %w", err)
		}
		t = tail{off: f.tocOff, data: append(rest, t.data...)}
	}
	return t, f, nil
}

// tocJSON decompresses the TOC in t (bounded). Its digest is computed on
// another goroutine as the bytes come out of the decompressor: check waits
// for it and says whether js is the TOC want pins. Until check returns nil
// js is untrusted: it may be decoded (the decode is built for hostile
// input) but nothing of it may be used. The sha256 of a large TOC's
// megabytes took 15-20 ms of a lazy start on a core without SHA
// instructions; beside the decompression and the decode it costs the
// start nothing while the other core has time.
func tocJSON(t tail, f footer, want digest.Digest) (js []byte, check func() error, err error) {
	rc, err := f.dec.DecompressTOC(bytes.NewReader(t.data[f.tocOff-t.off : f.tocEnd-t.off]))
	if err != nil {
		return nil, nil, fmt.Errorf("malformed eStargz TOC: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	defer rc.Close()
	h := newTOCHasher(want)
	js, err = readAllSized(io.LimitReader(rc, maxTOCJSON+1), jsonSizeHint(t, f), h.write)
	if err != nil {
		h.check()
		return nil, nil, fmt.Errorf("malformed eStargz TOC: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(js) > maxTOCJSON {
		h.check()
		return nil, nil, fmt.Errorf("eStargz TOC JSON is over the limit of %d bytes: %w", maxTOCJSON, errdefs.ErrInvalidArgument)
	}
	return js, h.check, nil
}

// tocHasher hashes the parts of a TOC's JSON on its own goroutine, in the
// order written.
type tocHasher struct {
	want  digest.Digest
	parts chan []byte
	done  chan struct{} // closed when got is set
	got   digest.Digest
}

func newTOCHasher(want digest.Digest) *tocHasher {
	h := &tocHasher{want: want, parts: make(chan []byte, 16), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		w := want.Algorithm().Hash()
		for p := range h.parts {
			w.Write(p)
		}
		h.got = digest.NewDigest(want.Algorithm(), w)
	}()
	return h
}

// write hands p over; its bytes must not change afterwards.
func (h *tocHasher) write(p []byte) { h.parts <- p }

// check ends the hash (nothing more may be written) and compares it.
func (h *tocHasher) check() error {
	close(h.parts)
	<-h.done
	if h.got != h.want {
		return fmt.Errorf("eStargz TOC is %s but the manifest pins %s: %w", h.got, h.want, errdefs.ErrDigestMismatch)
	}
	return nil
}

// jsonSizeHint guesses the size of the TOC's JSON, so that one buffer
// holds it: fresh memory is a large part of a lazy start's cost, and a
// buffer that regrows is paid for three times. A gzip stream ends with
// its decompressed size modulo 2^32 (RFC 1952), here that of the TOC's
// tar entry; other formats get 10 times the compressed size (a TOC
// compresses 6-9 times).
func jsonSizeHint(t tail, f footer) int {
	c := f.tocEnd - f.tocOff
	if _, ok := f.dec.(*gzipDecompressor); ok && c >= 4 {
		end := f.tocEnd - t.off
		if n := int64(binary.LittleEndian.Uint32(t.data[end-4 : end])); n > 0 && n <= maxTOCJSON {
			return int(n)
		}
	}
	return int(min(maxTOCJSON, 10*c))
}

// readAllSized is io.ReadAll into a buffer of hint bytes to start with.
// Each part read is handed to read as well, in parts of at least
// readPart bytes but the last: bytes handed over are never written again
// (a buffer that regrows is copied, the old one left as it was).
func readAllSized(r io.Reader, hint int, read func([]byte)) ([]byte, error) {
	b := make([]byte, 0, hint+1) // +1: the read that sees EOF needs room
	handed := 0
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b)-handed >= readPart || (err == io.EOF && len(b) > handed) {
			read(b[handed:len(b):len(b)])
			handed = len(b)
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// readPart is large enough that handing parts to another goroutine costs
// next to nothing, and small enough that it follows closely.
const readPart = 128 << 10

// openTOC indexes the TOC JSON js, which tocJSON verifies against want,
// with the upstream reader, and checks what the reader leaves to its
// callers: offsets inside the blob, known entry types, bounded entry
// counts and chunk sizes.
func openTOC(js []byte, payloadEnd, size int64, want digest.Digest) (*estargz.Reader, error) {
	toc := new(estargz.JTOC)
	// encoding/json/v2 decodes a TOC in less than half the time of v1
	// (a 3 MB TOC was about 25 ms of a lazy start's 45 ms of decoding).
	// Field names match without case, as v1 and the upstream reader do;
	// v2 is stricter about duplicate names and invalid UTF-8, which only
	// a hostile TOC has.
	if err := jsonv2.Unmarshal(js, toc, jsonv2.MatchCaseInsensitiveNames(true)); err != nil {
		return nil, fmt.Errorf("malformed eStargz TOC: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	r, err := estargz.Open(io.NewSectionReader(decodedTOC{size: size}, 0, size+decodedFooterSize),
		estargz.WithDecompressors(decodedTOC{toc: toc, digest: want}))
	if err != nil {
		return nil, fmt.Errorf("malformed eStargz TOC: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	// Chunk digests are checked as each chunk is read (Layer.decode).
	if got := r.TOCDigest(); got != want {
		return nil, fmt.Errorf("eStargz TOC is %s but the manifest pins %s: %w", got, want, errdefs.ErrDigestMismatch)
	}
	root, ok := r.Lookup("")
	if !ok {
		return nil, fmt.Errorf("eStargz TOC has no root: %w", errdefs.ErrInvalidArgument)
	}
	count := 0
	seen := map[*estargz.TOCEntry]bool{root: true}
	var walk func(dir string, e *estargz.TOCEntry) error
	walk = func(dir string, e *estargz.TOCEntry) error {
		var err error
		e.ForeachChild(func(base string, c *estargz.TOCEntry) bool {
			if count++; count > maxEntries {
				err = fmt.Errorf("eStargz TOC has over %d entries: %w", maxEntries, errdefs.ErrInvalidArgument)
				return false
			}
			p := join(dir, base)
			if err = checkEntry(r, p, c, payloadEnd); err != nil {
				return false
			}
			if c.Type == "dir" {
				if seen[c] {
					err = fmt.Errorf("eStargz TOC entry %q: a directory with two names: %w", p, errdefs.ErrInvalidArgument)
					return false
				}
				seen[c] = true
				err = walk(p, c)
			}
			return err == nil
		})
		return err
	}
	if err := walk("", root); err != nil {
		return nil, err
	}
	return r, nil
}

// decodedTOC hands estargz.Open a TOC decoded already, so that the
// reader indexes it without decompressing, hashing and decoding it a
// second time: the reader is opened over the blob's size followed by a
// footer only decodedTOC parses (the gzip footers fail on it), which
// says "TOC outside the blob", and ParseTOC then returns the decoded TOC
// with the digest tocJSON verified. Entry offsets stay the blob's: the
// last chunk's end is clamped to the TOC offset (Layer.spanEnd).
type decodedTOC struct {
	size   int64 // the blob's
	toc    *estargz.JTOC
	digest digest.Digest
}

// decodedFooterSize is larger than the gzip footers, so that estargz.Open
// reads all of decodedFooter and hands the gzip parsers bytes of it.
const decodedFooterSize = 64

var decodedFooter = bytes.Repeat([]byte{'T'}, decodedFooterSize)

func (d decodedTOC) ReadAt(p []byte, off int64) (int, error) {
	if off < d.size || off > d.size+decodedFooterSize {
		return 0, fmt.Errorf("read at %d of a decoded TOC: %w", off, errdefs.ErrInvalidArgument)
	}
	n := copy(p, decodedFooter[off-d.size:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Reader is not used: Layer.decode reads the chunks.
func (d decodedTOC) Reader(io.Reader) (io.ReadCloser, error) {
	return nil, fmt.Errorf("a decoded TOC reads no chunks: %w", errdefs.ErrNotImplemented)
}

func (d decodedTOC) FooterSize() int64 { return decodedFooterSize }

func (d decodedTOC) ParseFooter(p []byte) (int64, int64, int64, error) {
	if !bytes.Equal(p, decodedFooter) {
		return 0, 0, 0, fmt.Errorf("not a decoded TOC")
	}
	return 0, -1, 0, nil
}

func (d decodedTOC) ParseTOC(io.Reader) (*estargz.JTOC, digest.Digest, error) {
	if d.toc == nil {
		return nil, "", fmt.Errorf("no decoded TOC")
	}
	return d.toc, d.digest, nil
}

func join(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}

func checkEntry(r *estargz.Reader, p string, e *estargz.TOCEntry, payloadEnd int64) error {
	bad := func(why string) error {
		return fmt.Errorf("eStargz TOC entry %q: %s: %w", p, why, errdefs.ErrInvalidArgument)
	}
	switch e.Type {
	case "dir", "symlink", "char", "block", "fifo":
		return nil
	case "reg":
	default:
		return bad("unknown type " + e.Type)
	}
	if e.Size < 0 {
		return bad("negative size")
	}
	for off := int64(0); off < e.Size; {
		ce, ok := r.ChunkEntryForOffset(p, off)
		if !ok || ce.ChunkSize <= 0 || ce.ChunkOffset != off {
			return bad(fmt.Sprintf("no chunk at offset %d", off))
		}
		if ce.Offset <= 0 || ce.Offset >= payloadEnd || ce.Offset >= ce.NextOffset() || ce.InnerOffset < 0 {
			return bad(fmt.Sprintf("chunk at %d lies outside the layer's data", off))
		}
		if ce.ChunkSize > 64<<20 {
			return bad("chunk over 64 MiB")
		}
		off += ce.ChunkSize
	}
	return nil
}

// gzipDecompressor is estargz's gzip format (footer and TOC layout from
// upstream) decompressed with klauspost/compress, which inflates about
// twice as fast as compress/gzip: a lazy start waits on the largest TOC's
// inflation, and a cold read on its chunks'.
type gzipDecompressor struct{ estargz.GzipDecompressor }

func (gzipDecompressor) Reader(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }

// DecompressTOC returns the TOC JSON: the one tar entry of the TOC's
// gzip member, named estargz.TOCTarName.
func (gzipDecompressor) DecompressTOC(r io.Reader) (io.ReadCloser, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("TOC gzip header: %w", err)
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("TOC tar header: %w", err)
	}
	if h.Name != estargz.TOCTarName {
		return nil, fmt.Errorf("TOC tar entry is named %q, not %q", h.Name, estargz.TOCTarName)
	}
	return struct {
		io.Reader
		io.Closer
	}{tr, zr}, nil
}
