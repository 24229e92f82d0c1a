package lazy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testimage"
	"github.com/casfs/casfs/layers/merged"
)

// remoteBlob serves a blob like a registry with Range support, counting
// requests and bytes; corrupt flips one byte at that blob offset.
type remoteBlob struct {
	blob     []byte
	requests atomic.Int64
	bytes    atomic.Int64
	corrupt  atomic.Int64 // blob offset + 1; 0 for none
	down     atomic.Bool
}

func (r *remoteBlob) read(ctx context.Context, off int64, b []byte) error {
	r.requests.Add(1)
	n := int64(len(b))
	if r.down.Load() {
		return fmt.Errorf("registry down: %w", errdefs.ErrUnavailable)
	}
	if off < 0 || off+n > int64(len(r.blob)) {
		return fmt.Errorf("range %d+%d outside the blob", off, n)
	}
	r.bytes.Add(n)
	copy(b, r.blob[off:off+n])
	if c := r.corrupt.Load() - 1; c >= off && c < off+n {
		b[c-off] ^= 0xff
	}
	return nil
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var bigFile = randomBytes(1<<20+12345, 1)

func testFiles() []testimage.File {
	return []testimage.File{
		testimage.Dir("etc", 0o755),
		testimage.Reg("etc/motd", 0o644, "hello\n"),
		{Path: "etc/hosts.link", Hardlink: true, Linkname: "etc/motd"},
		testimage.Symlink("etc/link", "motd"),
		{Path: "etc/x", Mode: 0o600, Uid: 7, Gid: 8, Data: []byte("xattrs"), Xattrs: map[string]string{"user.k": "v"}},
		testimage.Dir("usr", 0o755),
		{Path: "usr/big", Mode: 0o755, Data: bigFile},
		{Path: "usr/suid", Mode: os.ModeSetuid | 0o755, Data: []byte("#!/bin/sh\n")},
		testimage.Whiteout("usr", "gone"),
		testimage.Opaque("var"),
		{Path: "dev/null", Mode: os.ModeDevice | os.ModeCharDevice | 0o666, Devmajor: 1, Devminor: 3},
		testimage.Reg("empty", 0o644, ""),
	}
}

// buildBlob makes an eStargz layer blob of files with the upstream builder.
func buildBlob(t testing.TB, files []testimage.File, chunk int) (ocispec.Descriptor, []byte) {
	t.Helper()
	return buildBlobAs(t, "estargz", files, chunk)
}

// buildBlobAs is buildBlob in a format: "estargz" or "zstdchunked".
func buildBlobAs(t testing.TB, format string, files []testimage.File, chunk int) (ocispec.Descriptor, []byte) {
	t.Helper()
	img, err := testimage.Build(testimage.ImageSpec{Layers: []testimage.Layer{{Files: files, Compression: format, ChunkSize: chunk, KeepOrder: true}}})
	if err != nil {
		t.Fatal(err)
	}
	d := img.Layers[0]
	return d, img.Blobs[d.Digest]
}

// inFormats runs test once per format a layer is served lazily in.
func inFormats(t *testing.T, test func(t *testing.T, format string)) {
	for _, f := range []string{"estargz", "zstdchunked"} {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			test(t, f)
		})
	}
}

func openLayer(t testing.TB, desc ocispec.Descriptor, rb *remoteBlob, dir string) (*Layer, error) {
	t.Helper()
	l, err := Open(context.Background(), desc, digest.Digest(desc.Annotations[TOCDigestAnnotation]), Options{Dir: dir, Remote: rb.read})
	if err == nil {
		t.Cleanup(func() { l.Close() })
	}
	return l, err
}

func readAll(t testing.TB, l *Layer, p string) []byte {
	t.Helper()
	ra, err := l.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	buf := make([]byte, 128<<10) // the size of a FUSE read
	for off := int64(0); ; {
		n, err := ra.ReadAt(buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read %s at %d: %v", p, off, err)
		}
	}
}

func TestOpenListsWithoutData(t *testing.T) {
	t.Parallel()
	inFormats(t, func(t *testing.T, format string) {
		desc, blob := buildBlobAs(t, format, testFiles(), 64<<10)
		rb := &remoteBlob{blob: blob}
		l, err := openLayer(t, desc, rb, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if n := rb.requests.Load(); n > 2 {
			t.Fatalf("opening the layer took %d requests, want at most 2 (footer and TOC)", n)
		}
		got := map[string]merged.Entry{}
		var order []string
		if err := l.Walk(context.Background(), func(e *merged.Entry) error {
			got[e.Path] = *e
			order = append(order, e.Path)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, meta := range []string{"stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"} {
			if _, ok := got[meta]; ok {
				t.Errorf("metadata entry %s listed", meta)
			}
		}
		want := map[string]uint32{
			"": unix.S_IFDIR | 0o755, "etc": unix.S_IFDIR | 0o755, "etc/motd": unix.S_IFREG | 0o644,
			"etc/hosts.link": unix.S_IFREG | 0o644, "etc/link": unix.S_IFLNK | 0o777, "etc/x": unix.S_IFREG | 0o600,
			"usr/big": unix.S_IFREG | 0o755, "usr/suid": unix.S_IFREG | unix.S_ISUID | 0o755,
			"dev/null": unix.S_IFCHR | 0o666,
			"empty":    unix.S_IFREG | 0o644,
		}
		for p, mode := range want {
			e, ok := got[p]
			if !ok {
				t.Errorf("entry %q missing; have %v", p, order)
				continue
			}
			if e.Attr.Mode&^0o7777 != mode&^0o7777 || (p != "etc/link" && e.Attr.Mode != mode) {
				t.Errorf("entry %q mode %o, want %o", p, e.Attr.Mode, mode)
			}
		}
		if e := got["usr/gone"]; !e.Whiteout {
			t.Errorf("usr/.wh.gone is not a whiteout of usr/gone: %+v", e)
		}
		if e := got["var"]; !e.Opaque || !e.Attr.IsDir() {
			t.Errorf("var is not an opaque directory: %+v", e)
		}
		for p := range got {
			if strings.Contains(p, ".wh.") {
				t.Errorf("whiteout marker %s listed as an entry", p)
			}
		}
		if e := got["etc/x"]; e.Attr.Uid != 7 || e.Attr.Gid != 8 || len(e.Xattrs) != 1 || e.Xattrs[0].Name != "user.k" || string(e.Xattrs[0].Value) != "v" {
			t.Errorf("etc/x: %+v", e)
		}
		if got["etc/motd"].Link == 0 || got["etc/motd"].Link != got["etc/hosts.link"].Link {
			t.Errorf("hardlinks not grouped: %d %d", got["etc/motd"].Link, got["etc/hosts.link"].Link)
		}
		if e := got["dev/null"]; e.Attr.Rdev != unix.Mkdev(1, 3) {
			t.Errorf("dev/null rdev %x", e.Attr.Rdev)
		}
		if e := got["etc/link"]; e.Target != "motd" {
			t.Errorf("etc/link target %q", e.Target)
		}
		if e := got["usr/big"]; e.Attr.Size != int64(len(bigFile)) {
			t.Errorf("usr/big size %d", e.Attr.Size)
		}
		if got := rb.bytes.Load(); got > int64(len(blob))/4 {
			t.Errorf("listing fetched %d of %d bytes", got, len(blob))
		}
	})
}

func TestReadFetchesOnlyItsChunks(t *testing.T) {
	t.Parallel()
	inFormats(t, func(t *testing.T, format string) {
		desc, blob := buildBlobAs(t, format, testFiles(), 64<<10)
		rb := &remoteBlob{blob: blob}
		dir := t.TempDir()
		l, err := openLayer(t, desc, rb, dir)
		if err != nil {
			t.Fatal(err)
		}
		before, reqs := rb.bytes.Load(), rb.requests.Load()
		if b := readAll(t, l, "etc/motd"); string(b) != "hello\n" {
			t.Fatalf("etc/motd = %q", b)
		}
		if n := rb.requests.Load() - reqs; n != 1 {
			t.Fatalf("reading a small file took %d requests, want 1", n)
		}
		if n := rb.bytes.Load() - before; n > 4096 {
			t.Fatalf("reading a 6-byte file fetched %d bytes", n)
		}
		// Through a hardlink name: the same bytes, from the cache.
		reqs = rb.requests.Load()
		if b := readAll(t, l, "etc/hosts.link"); string(b) != "hello\n" {
			t.Fatalf("etc/hosts.link = %q", b)
		}
		if b := readAll(t, l, "usr/big"); !bytes.Equal(b, bigFile) {
			t.Fatalf("usr/big: %d bytes differ from the %d written", len(b), len(bigFile))
		}
		bigReqs := rb.requests.Load() - reqs
		if bigReqs < 2 || bigReqs > 17 {
			t.Fatalf("a 1 MiB file in 64 KiB chunks took %d requests; want read-ahead to coalesce them", bigReqs)
		}
		if b := readAll(t, l, "empty"); len(b) != 0 {
			t.Fatalf("empty file read %d bytes", len(b))
		}
		// Everything read is cached: a new layer object on the same cache with
		// the registry gone serves it all.
		rb2 := &remoteBlob{blob: blob}
		rb2.down.Store(true)
		l2, err := openLayer(t, desc, rb2, dir)
		if err != nil {
			t.Fatalf("reopening from the cache with the registry down: %v", err)
		}
		if b := readAll(t, l2, "usr/big"); !bytes.Equal(b, bigFile) {
			t.Fatal("cached usr/big differs")
		}
		if n := rb2.requests.Load(); n != 0 {
			t.Fatalf("reading cached data made %d requests", n)
		}
		ra, _ := l2.Open(context.Background(), "etc/x")
		if _, err := ra.ReadAt(make([]byte, 6), 0); !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("uncached read with the registry down: %v, want ErrUnavailable", err)
		}
	})
}

func TestConcurrentReadersShareOneFetch(t *testing.T) {
	t.Parallel()
	desc, blob := buildBlob(t, testFiles(), 0)
	rb := &remoteBlob{blob: blob}
	l, err := openLayer(t, desc, rb, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reqs := rb.requests.Load()
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ra, err := l.Open(context.Background(), "usr/big")
			if err == nil {
				b := make([]byte, 1000)
				_, err = ra.ReadAt(b, 5000)
				if err == nil && !bytes.Equal(b, bigFile[5000:6000]) {
					err = errors.New("bytes differ")
				}
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := rb.requests.Load() - reqs; n != 1 {
		t.Fatalf("16 readers of one chunk made %d requests, want 1", n)
	}
}

func TestCorruptChunkIsNotServedOrCached(t *testing.T) {
	t.Parallel()
	desc, blob := buildBlob(t, testFiles(), 64<<10)
	rb := &remoteBlob{blob: blob}
	l, err := openLayer(t, desc, rb, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ce, ok := l.r.ChunkEntryForOffset("usr/big", 3*64<<10)
	if !ok {
		t.Fatal("no chunk")
	}
	rb.corrupt.Store(ce.Offset + 20 + 1)
	cached := l.Cached()
	ra, _ := l.Open(context.Background(), "usr/big")
	b := make([]byte, 100)
	if _, err := ra.ReadAt(b, 3*64<<10); !errors.Is(err, errdefs.ErrDigestMismatch) {
		t.Fatalf("read of a corrupted chunk: %v, want ErrDigestMismatch", err)
	}
	if l.Cached() != cached {
		t.Fatalf("a corrupted chunk was cached (%d -> %d bytes)", cached, l.Cached())
	}
	rb.corrupt.Store(0)
	if _, err := ra.ReadAt(b, 3*64<<10); err != nil || !bytes.Equal(b, bigFile[3*64<<10:3*64<<10+100]) {
		t.Fatalf("read after the registry is honest again: %v", err)
	}
}

func TestOpenRefusesBadTOC(t *testing.T) {
	t.Parallel()
	desc, blob := buildBlob(t, testFiles(), 0)
	wrong := desc
	wrong.Annotations = map[string]string{TOCDigestAnnotation: digest.FromString("other").String()}
	if _, err := openLayer(t, wrong, &remoteBlob{blob: blob}, t.TempDir()); !errors.Is(err, errdefs.ErrDigestMismatch) {
		t.Fatalf("wrong TOC digest: %v, want ErrDigestMismatch", err)
	}
	// Not eStargz at all: a plain gzip layer.
	gz, err := testimage.Gzip(testimage.RawTar(testFiles()[:2]))
	if err != nil {
		t.Fatal(err)
	}
	plain := ocispec.Descriptor{Digest: digest.FromBytes(gz), Size: int64(len(gz)), Annotations: desc.Annotations}
	if _, err := openLayer(t, plain, &remoteBlob{blob: gz}, t.TempDir()); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("plain gzip layer: %v, want ErrInvalidArgument", err)
	}
	// Truncated: the footer is gone.
	cut := blob[:len(blob)-10]
	short := ocispec.Descriptor{Digest: digest.FromBytes(cut), Size: int64(len(cut)), Annotations: desc.Annotations}
	if _, err := openLayer(t, short, &remoteBlob{blob: cut}, t.TempDir()); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("truncated layer: %v, want ErrInvalidArgument", err)
	}
}

// TestOpenVerifiesTOCBesideDecode: the TOC's digest is computed while the
// TOC decodes. A TOC that is not the pinned one fails as such, also where
// its checks fail too; TOCVerified hears only of a TOC that matches.
func TestOpenVerifiesTOCBesideDecode(t *testing.T) {
	t.Parallel()
	data, _ := splitTOC(t)
	beyond := []byte(`{"version":1,"entries":[{"name":"far","type":"reg","size":5,"offset":1099511627776}]}`)
	desc, blob, ok := withTOC(data, beyond)
	if !ok {
		t.Fatal("the upstream writer refused the TOC")
	}
	pinned := digest.Digest(desc.Annotations[TOCDigestAnnotation])
	var heard []digest.Digest
	open := func(want digest.Digest) error {
		l, err := Open(context.Background(), desc, want, Options{Dir: t.TempDir(), Remote: (&remoteBlob{blob: blob}).read,
			TOCVerified: func(js []byte) { heard = append(heard, digest.FromBytes(js)) }})
		if err == nil {
			l.Close()
		}
		return err
	}
	if err := open(digest.FromString("other")); !errors.Is(err, errdefs.ErrDigestMismatch) {
		t.Fatalf("bad TOC pinned by another digest: %v, want ErrDigestMismatch", err)
	}
	if len(heard) != 0 {
		t.Fatalf("TOCVerified heard of a TOC that is not the pinned one: %v", heard)
	}
	err := open(pinned)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), `"far"`) {
		t.Fatalf("bad TOC pinned by its digest: %v, want ErrInvalidArgument naming the entry", err)
	}
	good, gblob := buildBlob(t, testFiles(), 0)
	gpinned := digest.Digest(good.Annotations[TOCDigestAnnotation])
	heard = nil
	l, err := Open(context.Background(), good, gpinned, Options{Dir: t.TempDir(), Remote: (&remoteBlob{blob: gblob}).read,
		TOCVerified: func(js []byte) { heard = append(heard, digest.FromBytes(js)) }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(heard) != 1 || heard[0] != gpinned || digest.FromBytes(l.TOC()) != gpinned {
		t.Fatalf("TOCVerified heard %v, want once %s", heard, gpinned)
	}
}

func TestSpansLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := openSpans(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []span{{10, 5}, {30, 10}, {15, 5}, {0, 3}} {
		if err := s.put(r.Off, make([]byte, r.Len)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.put(95, make([]byte, 10)); err == nil {
		t.Fatal("put past the end accepted")
	}
	s.close()
	// A torn last line from a crash is ignored.
	f, _ := os.OpenFile(dir+"/ranges", os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("50 1")
	f.Close()
	s, err = openSpans(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if !s.has(10, 10) || s.has(10, 11) || !s.has(0, 3) || s.has(50, 1) {
		t.Fatalf("ranges after reopen: %v", s.have)
	}
	want := []span{{3, 7}, {20, 10}, {40, 60}}
	if got := s.missing(); !slices.Equal(got, want) {
		t.Fatalf("missing = %v, want %v", got, want)
	}
}

// TestSequentialReadPrefetches: a reader going through a file from its
// start has the chunks after it fetched in the background, so that the
// rest of the file reads with the registry gone; a reader jumping around
// gets only what it reads.
func TestSequentialReadPrefetches(t *testing.T) {
	t.Parallel()
	desc, blob := buildBlob(t, testFiles(), 64<<10)
	rb := &remoteBlob{blob: blob}
	l, err := Open(context.Background(), desc, digest.Digest(desc.Annotations[TOCDigestAnnotation]),
		Options{Dir: t.TempDir(), Remote: rb.read, ReadAhead: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	// Random access: one read in the middle fetches its chunk only.
	ra, err := l.Open(context.Background(), "usr/big")
	if err != nil {
		t.Fatal(err)
	}
	before := rb.bytes.Load()
	if _, err := ra.ReadAt(make([]byte, 1000), 500<<10); err != nil {
		t.Fatal(err)
	}
	if n := rb.bytes.Load() - before; n > 80<<10 {
		t.Fatalf("a 1000-byte read in the middle fetched %d bytes", n)
	}

	// Sequential from the start: the first read brings the rest along.
	seq, err := l.Open(context.Background(), "usr/big")
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 64<<10)
	if _, err := seq.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	// The next maxPrefetches chunks arrive without being read.
	ahead := int64(len(head) + maxPrefetches*(64<<10))
	deadline := time.Now().Add(30 * time.Second)
	for !cachedRange(l, "usr/big", int64(len(head)), ahead) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes after a sequential read of 64 KiB not prefetched within 30s", ahead-int64(len(head)))
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
	rb.down.Store(true)
	rest := make([]byte, ahead-int64(len(head)))
	if _, err := seq.ReadAt(rest, int64(len(head))); err != nil {
		t.Fatalf("prefetched bytes with the registry down: %v", err)
	}
	if got := append(head, rest...); !bytes.Equal(got, bigFile[:ahead]) {
		t.Fatal("prefetched bytes differ from the file")
	}
}

// cachedRange reports whether every chunk of file p covering [from, to)
// is in memory or in the chunk cache.
func cachedRange(l *Layer, p string, from, to int64) bool {
	for off := from; off < to; {
		ce, ok := l.r.ChunkEntryForOffset(p, off)
		if !ok {
			return false
		}
		inMem := l.mem.has(chunkKey{ce.Offset, ce.InnerOffset})
		if !inMem && !l.sp.has(ce.Offset, l.spanEnd(ce)-ce.Offset) {
			return false
		}
		off = ce.ChunkOffset + ce.ChunkSize
	}
	return true
}
