package store

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// fuzzArchive builds a tar of (typeflag, name, body) members.
func fuzzArchive(ents ...[3]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Typeflag: e[0][0], Name: e[1], Mode: 0o444, Format: tar.FormatPAX}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e[2]))
		} else {
			h.Linkname = e[2]
		}
		tw.WriteHeader(h)
		if h.Size > 0 {
			tw.Write([]byte(e[2]))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func blobMember(body string) [3]string {
	return [3]string{"0", "blobs/sha256/" + digest.FromString(body).Encoded(), body}
}

// FuzzImportContent feeds arbitrary bytes to content import: no panic; a
// failed import leaves blobs/, the records and the ingests as they were; a
// successful one stored exactly the blobs it reports, each verifying.
func FuzzImportContent(f *testing.F) {
	ctx := context.Background()
	s, err := Open(fuzzTempDir(f), Options{Create: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	// One blob is already there, so inputs can collide with it.
	if _, err := s.Ingest(ctx, "pre", strings.NewReader("present"), IngestOptions{}); err != nil {
		f.Fatal(err)
	}
	wrong := blobMember("right")
	wrong[2] = "wrong"
	for _, seed := range [][][3]string{
		{blobMember("a"), blobMember("bb")},
		{{"5", "blobs/", ""}, {"5", "blobs/sha256/", ""}, blobMember("present")},
		{blobMember("a"), blobMember("a")},
		{blobMember("a"), wrong},
		{{"0", "blobs/sha256/xyz", "x"}},
		{{"0", "../blobs/sha256/" + digest.FromString("x").Encoded(), "x"}},
		{{"0", "/blobs/sha256/" + digest.FromString("x").Encoded(), "x"}},
		{{"0", "./blobs/sha256/" + digest.FromString("x").Encoded(), "x"}},
		{{"0", "blobs/sha256/../sha256/" + digest.FromString("x").Encoded(), "x"}},
		{{"0", "blobs/sha256/" + strings.ToUpper(digest.FromString("x").Encoded()), "x"}},
		{{"2", "blobs/sha256/" + digest.FromString("x").Encoded(), "/etc/passwd"}},
		{{"1", "blobs/sha256/" + digest.FromString("x").Encoded(), "blobs/sha256/x"}},
		{{"0", "other/file", "x"}},
		{{"0", "blobs/sha512/" + digest.SHA512.FromString("x").Encoded(), "x"}},
	} {
		f.Add(fuzzArchive(seed...))
	}
	good := fuzzArchive(blobMember("c"), blobMember("dd"))
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add([]byte("\x1f\x8b\x08\x00"))

	blobNames := func(t *testing.T) []string {
		ents, err := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	records := func(t *testing.T) []string {
		all, err := s.ListContent(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range all {
			out = append(out, c.Digest.Encoded())
		}
		slices.Sort(out)
		return out
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		blobsBefore, recsBefore := blobNames(t), records(t)
		infos, err := s.ImportContent(ctx, bytes.NewReader(data))
		if act, aerr := s.ActiveIngests(ctx); aerr != nil || len(act) != 0 {
			t.Fatalf("import left ingests behind: %+v %v (import err %v)", act, aerr, err)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			if got := blobNames(t); !slices.Equal(got, blobsBefore) {
				t.Fatalf("failed import (%v) changed blobs/: %v -> %v", err, blobsBefore, got)
			}
			if got := records(t); !slices.Equal(got, recsBefore) {
				t.Fatalf("failed import (%v) changed the records: %v -> %v", err, recsBefore, got)
			}
			return
		}
		var ds []digest.Digest
		for _, in := range infos {
			ds = append(ds, in.Digest)
		}
		problems, err := s.VerifyContent(ctx, ds)
		if err != nil || len(problems) != 0 {
			t.Fatalf("imported blobs do not verify: %+v %v", problems, err)
		}
		want := slices.Clone(blobsBefore)
		for _, d := range ds {
			if !slices.Contains(want, d.Encoded()) {
				want = append(want, d.Encoded())
			}
		}
		slices.Sort(want)
		if got := blobNames(t); !slices.Equal(got, want) {
			t.Fatalf("import reported %v but blobs/ went %v -> %v", ds, blobsBefore, got)
		}
	})
}

// fuzzTempDir is a temporary folder on tmpfs when the machine has one:
// the store fsyncs every commit, which on a busy disk starves the fuzzer.
func fuzzTempDir(f *testing.F) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "casfs-fuzz-"); err == nil {
			f.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return f.TempDir()
}
