package cas

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pseudoRandom returns n deterministic bytes for seed: an AES-CTR key
// stream, which stays fast under the race detector.
func pseudoRandom(seed uint64, n int) []byte {
	var key [16]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err)
	}
	b := make([]byte, n)
	cipher.NewCTR(block, make([]byte, aes.BlockSize)).XORKeyStream(b, b)
	return b
}

func mustWriter(t testing.TB, s *Store, ref string, opts WriterOpts) Writer {
	t.Helper()
	w, err := s.Writer(context.Background(), ref, opts)
	if err != nil {
		t.Fatalf("writer %q: %v", ref, err)
	}
	return w
}

// writeIn writes b in pieces of odd sizes, so chunk boundaries fall in
// the middle of writes.
func writeIn(t testing.TB, w io.Writer, b []byte) {
	t.Helper()
	sizes := []int{1, 7, 4093, 65536, 1 << 20, 333333}
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		m, err := w.Write(b[:n])
		if err != nil || m != n {
			t.Fatalf("write %d bytes: wrote %d: %v", n, m, err)
		}
		b = b[n:]
	}
}

func commitBlob(t testing.TB, s *Store, ref string, b []byte) digest.Digest {
	t.Helper()
	w := mustWriter(t, s, ref, WriterOpts{})
	defer w.Close()
	writeIn(t, w, b)
	d := digest.FromBytes(b)
	if err := w.Commit(context.Background(), int64(len(b)), d); err != nil {
		t.Fatalf("commit %q: %v", ref, err)
	}
	return d
}

func readBlob(t testing.TB, s *Store, d digest.Digest) []byte {
	t.Helper()
	ra, err := s.ReaderAt(context.Background(), d)
	if err != nil {
		t.Fatalf("reader %s: %v", d, err)
	}
	defer ra.Close()
	b, err := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantErr(t testing.TB, err error, target error, substrings ...string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v: want one wrapping %v", err, target)
	}
	for _, s := range substrings {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not mention %q", err, s)
		}
	}
}

// blobFiles lists the names under blobs/sha256.
func blobFiles(t testing.TB, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// ingestDirs lists the folders under ingest/.
func ingestDirs(t testing.TB, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Root(), "ingest"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// onlyReader hides Seek (and WriterTo) so Copy must discard to resume.
type onlyReader struct{ io.Reader }

// shortReader is b cut after n bytes, as a stream.
func shortReader(b []byte, n int) io.Reader { return onlyReader{bytes.NewReader(b[:n])} }
