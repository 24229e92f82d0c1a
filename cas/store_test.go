package cas

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/opencontainers/go-digest"
)

func TestWriteAndCommit(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := pseudoRandom(1, 3*chunkSize+12345) // several full chunks and a tail
	d := digest.FromBytes(data)
	w := mustWriter(t, s, "ref-1", WriterOpts{Expected: d, Total: int64(len(data))})
	writeIn(t, w, data)
	if got := w.Digest(); got != d {
		t.Fatalf("writer digest %s, want %s", got, d)
	}
	if err := w.Commit(ctx, int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	if got := w.Digest(); got != d {
		t.Fatalf("digest after commit %s, want %s", got, d)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close after commit: %v", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("write after commit: %v", err)
	}
	if !bytes.Equal(readBlob(t, s, d), data) {
		t.Fatal("blob content differs from what was written")
	}
	info, err := s.Info(ctx, d)
	if err != nil || info.Digest != d || info.Size != int64(len(data)) || info.CreatedAt.IsZero() {
		t.Fatalf("info %+v, %v", info, err)
	}
	p, err := s.BlobPath(d)
	if err != nil || p != filepath.Join(s.Root(), "blobs", "sha256", d.Encoded()) {
		t.Fatalf("blob path %q, %v", p, err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("blob mode %v, %v: want 0444", fi.Mode(), err)
	}
	if dirs := ingestDirs(t, s); len(dirs) != 0 {
		t.Fatalf("ingest folders left after commit: %v", dirs)
	}
	if err := s.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Status(ctx, "ref-1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("status after commit: %v", err)
	}
}

func TestCommitExistingContent(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := []byte("same content twice")
	d := commitBlob(t, s, "first", data)
	w := mustWriter(t, s, "second", WriterOpts{})
	writeIn(t, w, data)
	err := w.Commit(ctx, int64(len(data)), d)
	wantErr(t, err, errdefs.ErrExists, d.String())
	if _, err := s.Status(ctx, "second"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("ingest kept after ErrExists: %v", err)
	}
	if dirs := ingestDirs(t, s); len(dirs) != 0 {
		t.Fatalf("ingest folders left: %v", dirs)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The ref is free again.
	mustWriter(t, s, "second", WriterOpts{}).Close()
}

func TestResumeAfterClose(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := pseudoRandom(2, 2*chunkSize+777)
	d := digest.FromBytes(data)
	half := len(data)/2 + 3
	w := mustWriter(t, s, "resume", WriterOpts{Expected: d, Total: int64(len(data))})
	writeIn(t, w, data[:half])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := s.Status(ctx, "resume")
	if err != nil || st.Offset != int64(half) {
		t.Fatalf("status after close: %+v, %v; want offset %d", st, err, half)
	}
	w = mustWriter(t, s, "resume", WriterOpts{Expected: d, Total: int64(len(data))})
	defer w.Close()
	ws, _ := w.Status()
	if ws.Offset != int64(half) {
		t.Fatalf("resumed at %d, want %d", ws.Offset, half)
	}
	if got, want := w.Digest(), digest.FromBytes(data[:half]); got != want {
		t.Fatalf("resumed digest %s, want %s", got, want)
	}
	writeIn(t, w, data[half:])
	if err := w.Commit(ctx, int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBlob(t, s, d), data) {
		t.Fatal("resumed blob differs")
	}
}

func TestResumeAfterTruncate(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	good := pseudoRandom(3, chunkSize+100)
	w := mustWriter(t, s, "trunc", WriterOpts{})
	defer w.Close()
	writeIn(t, w, []byte("garbage that must go"))
	if err := w.Truncate(0); err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, good[:5000])
	writeIn(t, w, []byte("more garbage"))
	if err := w.Truncate(5000); err != nil { // keep a prefix: re-hash it
		t.Fatal(err)
	}
	if got, want := w.Digest(), digest.FromBytes(good[:5000]); got != want {
		t.Fatalf("digest after truncate %s, want %s", got, want)
	}
	wantErr(t, w.Truncate(5001), errdefs.ErrInvalidArgument, "5001")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustWriter(t, s, "trunc", WriterOpts{})
	defer w.Close()
	if st, _ := w.Status(); st.Offset != 5000 {
		t.Fatalf("resumed at %d, want 5000", st.Offset)
	}
	writeIn(t, w, good[5000:])
	d := digest.FromBytes(good)
	if err := w.Commit(ctx, int64(len(good)), d); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBlob(t, s, d), good) {
		t.Fatal("blob differs")
	}
}

func TestAbort(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	w := mustWriter(t, s, "abort-me", WriterOpts{})
	writeIn(t, w, []byte("partial"))
	wantErr(t, s.Abort(ctx, "abort-me"), errdefs.ErrLocked, "abort-me")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(ctx, "abort-me"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Status(ctx, "abort-me"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("status after abort: %v", err)
	}
	if dirs := ingestDirs(t, s); len(dirs) != 0 {
		t.Fatalf("ingest folders left after abort: %v", dirs)
	}
	wantErr(t, s.Abort(ctx, "abort-me"), errdefs.ErrNotFound, "abort-me")
	w = mustWriter(t, s, "abort-me", WriterOpts{})
	defer w.Close()
	if st, _ := w.Status(); st.Offset != 0 {
		t.Fatalf("writer after abort starts at %d", st.Offset)
	}
}

func TestSmallBlobs(t *testing.T) {
	ctx := context.Background()
	for _, data := range [][]byte{{}, {'x'}} {
		t.Run(fmt.Sprintf("%d bytes", len(data)), func(t *testing.T) {
			s := newStore(t)
			d := digest.FromBytes(data)
			w := mustWriter(t, s, "small", WriterOpts{Expected: d})
			defer w.Close()
			writeIn(t, w, data)
			if err := w.Commit(ctx, int64(len(data)), d); err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx, d)
			if err != nil || info.Size != int64(len(data)) {
				t.Fatalf("info %+v, %v", info, err)
			}
			if got := readBlob(t, s, d); !bytes.Equal(got, data) {
				t.Fatalf("read %q, want %q", got, data)
			}
			if err := s.Verify(ctx, d); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCommitMismatchKeepsIngest(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := pseudoRandom(4, chunkSize+10)
	d := digest.FromBytes(data)
	wrong := []byte("not the content")
	w := mustWriter(t, s, "mismatch", WriterOpts{})
	defer w.Close()
	writeIn(t, w, wrong)

	// Every failed commit ends its writer (containerd's contract) and
	// releases the ref: the next writer resumes the same bytes.
	err := w.Commit(ctx, int64(len(data)), d)
	wantErr(t, err, errdefs.ErrFailedPrecondition, fmt.Sprint(len(wrong)), fmt.Sprint(len(data)), "mismatch")
	wantErr(t, w.Commit(ctx, 0, d), errdefs.ErrFailedPrecondition, "closed")
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("write after a failed commit succeeded")
	}
	w = mustWriter(t, s, "mismatch", WriterOpts{})
	err = w.Commit(ctx, 0, d)
	wantErr(t, err, errdefs.ErrDigestMismatch, d.String(), digest.FromBytes(wrong).String())
	wantErr(t, err, errdefs.ErrFailedPrecondition)
	w = mustWriter(t, s, "mismatch", WriterOpts{})
	wantErr(t, w.Commit(ctx, 0, "sha256:nothex"), errdefs.ErrInvalidArgument)

	st, err := s.Status(ctx, "mismatch")
	if err != nil || st.Offset != int64(len(wrong)) {
		t.Fatalf("ingest after failed commits: %+v, %v", st, err)
	}
	if files := blobFiles(t, s); len(files) != 0 {
		t.Fatalf("failed commit left blobs: %v", files)
	}
	// A new writer starts over and commits the right content.
	w = mustWriter(t, s, "mismatch", WriterOpts{})
	defer w.Close()
	if err := w.Truncate(0); err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, data)
	if err := w.Commit(ctx, int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBlob(t, s, d), data) {
		t.Fatal("blob differs")
	}
	// Content known by digest and stored: ErrExists at open, no ingest.
	_, err = s.Writer(ctx, "again", WriterOpts{Expected: d})
	wantErr(t, err, errdefs.ErrExists, d.String())
	if _, err := s.Status(ctx, "again"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("refused writer left an ingest: %v", err)
	}
}

// TestResumeKeepsUpdatedAt: a writer reopened on an ingest reports the time
// of the last write, not of the reopening (containerd's Resume test).
func TestResumeKeepsUpdatedAt(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	w := mustWriter(t, s, "resume", WriterOpts{})
	writeIn(t, w, []byte("first part"))
	before, err := w.Status()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustWriter(t, s, "resume", WriterOpts{})
	defer w.Close()
	after, err := w.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !after.UpdatedAt.Equal(before.UpdatedAt) || after.Offset != before.Offset {
		t.Fatalf("resumed writer: updated %v offset %d; before: %v %d", after.UpdatedAt, after.Offset, before.UpdatedAt, before.Offset)
	}
	if st, err := s.Status(ctx, "resume"); err != nil || !st.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatalf("store status: %+v %v", st, err)
	}
}

func TestCommitChecksWriterOpts(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := []byte("payload")
	other := digest.FromString("something else")
	w := mustWriter(t, s, "opts", WriterOpts{Expected: other})
	defer w.Close()
	writeIn(t, w, data)
	wantErr(t, w.Commit(ctx, 0, ""), errdefs.ErrDigestMismatch, other.String())
	w2 := mustWriter(t, s, "opts-size", WriterOpts{Total: 100})
	defer w2.Close()
	writeIn(t, w2, data)
	wantErr(t, w2.Commit(ctx, 0, ""), errdefs.ErrFailedPrecondition, "100", "7")
}

func TestExpectationChangeRestartsIngest(t *testing.T) {
	s := newStore(t)
	w := mustWriter(t, s, "changing", WriterOpts{Expected: digest.FromString("a")})
	writeIn(t, w, []byte("bytes for a"))
	w.Close()
	w = mustWriter(t, s, "changing", WriterOpts{Expected: digest.FromString("b")})
	defer w.Close()
	st, _ := w.Status()
	if st.Offset != 0 || st.Expected != digest.FromString("b") {
		t.Fatalf("status after changed expectation: %+v", st)
	}
}

func TestConcurrentWritersOneRef(t *testing.T) {
	s := newStore(t)
	const n = 8
	var (
		attempted sync.WaitGroup
		done      sync.WaitGroup
		mu        sync.Mutex
		winners   int
		errs      []error
	)
	attempted.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			w, err := s.Writer(context.Background(), "contended/ref", WriterOpts{})
			mu.Lock()
			if err == nil {
				winners++
			} else {
				errs = append(errs, err)
			}
			mu.Unlock()
			attempted.Done()
			attempted.Wait() // hold the lock until everyone has tried
			if w != nil {
				w.Close()
			}
		}()
	}
	done.Wait()
	if winners != 1 || len(errs) != n-1 {
		t.Fatalf("%d writers won, %d failed: %v", winners, len(errs), errs)
	}
	for _, err := range errs {
		wantErr(t, err, errdefs.ErrLocked, `"contended/ref"`)
	}
	// Released by Close.
	mustWriter(t, s, "contended/ref", WriterOpts{}).Close()
}

func TestLockReleasedByCommit(t *testing.T) {
	s := newStore(t)
	w := mustWriter(t, s, "r", WriterOpts{})
	_, err := s.Writer(context.Background(), "r", WriterOpts{})
	wantErr(t, err, errdefs.ErrLocked, `"r"`)
	writeIn(t, w, []byte("abc"))
	if err := w.Commit(context.Background(), 3, ""); err != nil {
		t.Fatal(err)
	}
	w2 := mustWriter(t, s, "r", WriterOpts{})
	defer w2.Close()
	if st, _ := w2.Status(); st.Offset != 0 {
		t.Fatalf("new ingest after commit starts at %d", st.Offset)
	}
}

// Readers polling for a blob while it is committed see nothing or all of
// it, never a prefix.
func TestReadersNeverSeePartialBlob(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := pseudoRandom(5, 6*chunkSize+1)
	d := digest.FromBytes(data)
	dir := filepath.Join(s.Root(), "blobs", "sha256")
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	problems := make(chan string, 16)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		ready.Add(1)
		go func(byDir bool) {
			defer wg.Done()
			ready.Done()
			for {
				if byDir {
					entries, _ := os.ReadDir(dir)
					for _, e := range entries {
						if fi, err := e.Info(); err == nil && fi.Size() != int64(len(data)) {
							problems <- fmt.Sprintf("%s listed with %d bytes", e.Name(), fi.Size())
							return
						}
					}
				}
				ra, err := s.ReaderAt(ctx, d)
				if errors.Is(err, errdefs.ErrNotFound) {
					continue
				}
				if err != nil {
					problems <- err.Error()
					return
				}
				b, _ := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
				ra.Close()
				if !bytes.Equal(b, data) {
					problems <- fmt.Sprintf("read %d bytes that differ from the blob", len(b))
				}
				return
			}
		}(i == 0)
	}
	ready.Wait()
	w := mustWriter(t, s, "visible", WriterOpts{})
	defer w.Close()
	writeIn(t, w, data)
	if err := w.Commit(ctx, int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(problems)
	for p := range problems {
		t.Error(p)
	}
}

func TestVerifyCatchesCorruption(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := pseudoRandom(6, 100000)
	d := commitBlob(t, s, "v", data)
	if err := s.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	p, _ := s.BlobPath(d)
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{data[5000] ^ 0xff}, 5000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	wantErr(t, s.Verify(ctx, d), errdefs.ErrDigestMismatch, d.String())
}

func TestWalkInDigestOrder(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var want []digest.Digest
	for i := 0; i < 20; i++ {
		want = append(want, commitBlob(t, s, fmt.Sprint("w", i), []byte(fmt.Sprint("blob ", i))))
	}
	dir := filepath.Join(s.Root(), "blobs", "sha256")
	for _, junk := range []string{"junk", "abc", strings.ToUpper(want[0].Encoded()), want[1].Encoded() + ".tmp"} {
		if err := os.WriteFile(filepath.Join(dir, junk), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, strings.Repeat("0", 64)), 0o755); err != nil {
		t.Fatal(err)
	}
	var got []digest.Digest
	err := s.Walk(ctx, func(info Info) error {
		if info.Size != int64(len(readBlob(t, s, info.Digest))) {
			t.Errorf("%s: size %d", info.Digest, info.Size)
		}
		got = append(got, info.Digest)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("walk saw %d blobs, want %d: %v", len(got), len(want), got)
	}
	seen := map[digest.Digest]bool{}
	for i, d := range got {
		seen[d] = true
		if i > 0 && got[i-1] >= d {
			t.Fatalf("walk out of order: %s before %s", got[i-1], d)
		}
	}
	for _, d := range want {
		if !seen[d] {
			t.Fatalf("walk missed %s", d)
		}
	}
	stop := errors.New("stop")
	calls := 0
	err = s.Walk(ctx, func(Info) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("walk after error: %d calls, %v", calls, err)
	}
}

func TestStatusFields(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	before := time.Now().Add(-time.Second)
	d := digest.FromString("the b content")
	wa := mustWriter(t, s, "b-ref", WriterOpts{Expected: d, Total: 13})
	writeIn(t, wa, []byte("the b"))
	wb := mustWriter(t, s, "a-ref", WriterOpts{})
	writeIn(t, wb, []byte("xyz"))

	ws, err := wa.Status()
	if err != nil || ws.Ref != "b-ref" || ws.Offset != 5 || ws.Total != 13 || ws.Expected != d ||
		ws.StartedAt.Before(before) || ws.UpdatedAt.Before(ws.StartedAt) {
		t.Fatalf("writer status %+v, %v", ws, err)
	}
	wa.Close()
	wb.Close()
	st, err := s.Status(ctx, "b-ref")
	if err != nil || st.Ref != "b-ref" || st.Offset != 5 || st.Total != 13 || st.Expected != d ||
		st.StartedAt.Before(before) || st.UpdatedAt.Before(st.StartedAt.Add(-time.Millisecond)) {
		t.Fatalf("store status %+v, %v", st, err)
	}
	all, err := s.ListStatuses(ctx)
	if err != nil || len(all) != 2 || all[0].Ref != "a-ref" || all[0].Offset != 3 || all[1].Ref != "b-ref" {
		t.Fatalf("list %+v, %v", all, err)
	}
	if all[0].Total != 0 || all[0].Expected != "" {
		t.Fatalf("unknown expectations reported as %+v", all[0])
	}
	if _, err := s.Status(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("status of unknown ref: %v", err)
	}
}

func TestCopyShortReaderThenResume(t *testing.T) {
	ctx := context.Background()
	for _, seekable := range []bool{false, true} {
		t.Run(fmt.Sprint("seekable=", seekable), func(t *testing.T) {
			s := newStore(t)
			data := pseudoRandom(7, 3*chunkSize+5)
			d := digest.FromBytes(data)
			size := int64(len(data))
			cut := 2*chunkSize + 99
			w := mustWriter(t, s, "copy", WriterOpts{Expected: d, Total: size})
			err := Copy(ctx, w, shortReader(data, cut), size, d)
			wantErr(t, err, io.ErrUnexpectedEOF, fmt.Sprintf("%d of %d", cut, size))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			st, err := s.Status(ctx, "copy")
			if err != nil || st.Offset != int64(cut) {
				t.Fatalf("ingest after short copy: %+v, %v", st, err)
			}
			w = mustWriter(t, s, "copy", WriterOpts{Expected: d, Total: size})
			defer w.Close()
			var r io.Reader = onlyReader{bytes.NewReader(data)}
			if seekable {
				r = bytes.NewReader(data)
			}
			if err := Copy(ctx, w, r, size, d); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readBlob(t, s, d), data) {
				t.Fatal("blob differs")
			}
			// Copying content that is there already succeeds.
			w2 := mustWriter(t, s, "copy-again", WriterOpts{})
			defer w2.Close()
			if err := Copy(ctx, w2, bytes.NewReader(data), size, d); err != nil {
				t.Fatalf("copy of existing content: %v", err)
			}
		})
	}
}

func TestCopyResumeStreamTooShortForOffset(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d := digest.FromString("0123456789")
	w := mustWriter(t, s, "c", WriterOpts{Expected: d})
	writeIn(t, w, []byte("0123456789"))
	err := Copy(ctx, w, onlyReader{strings.NewReader("0123")}, 0, d)
	wantErr(t, err, io.ErrUnexpectedEOF, "4", "10")
	w.Close()
}

// Without an expected digest, a resumed ingest is checked against its input:
// an input that differs from the stored bytes, or ends inside them, is what
// gets stored, never the stored prefix joined to the input's tail.
func TestCopyResumeVerifiesStoredBytes(t *testing.T) {
	ctx := context.Background()
	a := pseudoRandom(21, 3*chunkSize+17)
	same := pseudoRandom(21, 3*chunkSize+17)
	b := pseudoRandom(22, 3*chunkSize+17)
	diffLate := append([]byte(nil), a...)
	diffLate[2*chunkSize+5] ^= 0xff
	stored := 2*chunkSize + 100
	for _, tc := range []struct {
		name     string
		input    []byte
		seekable bool
		kept     int64
	}{
		{"same input resumes", same, false, int64(stored)},
		{"same input seekable", same, true, int64(stored)},
		{"other input starts over", b, false, 0},
		{"other input seekable starts over", b, true, 0},
		{"input differs inside stored bytes", diffLate, false, 2*chunkSize + 5},
		{"input shorter than stored bytes", a[:chunkSize+3], false, chunkSize + 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			w := mustWriter(t, s, "r", WriterOpts{})
			writeIn(t, w, a[:stored])
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w = mustWriter(t, s, "r", WriterOpts{})
			defer w.Close()
			var r io.Reader = onlyReader{bytes.NewReader(tc.input)}
			if tc.seekable {
				r = bytes.NewReader(tc.input)
			}
			res, err := CopyResume(ctx, w, r, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			if res.Stored != int64(stored) || res.Kept != tc.kept || res.Restarted() != (tc.kept < int64(stored)) {
				t.Fatalf("resume = %+v, want stored %d kept %d", res, stored, tc.kept)
			}
			d := digest.FromBytes(tc.input)
			if !bytes.Equal(readBlob(t, s, d), tc.input) {
				t.Fatal("blob differs from the input")
			}
			if files := blobFiles(t, s); len(files) != 1 {
				t.Fatalf("blobs after copy: %v", files)
			}
		})
	}
}

// cancelReader cancels its context after the first read.
type cancelReader struct {
	r      io.Reader
	cancel func()
}

func (c cancelReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.cancel()
	return n, err
}

func TestCopyHonoursContext(t *testing.T) {
	s := newStore(t)
	data := pseudoRandom(8, 4*chunkSize)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := mustWriter(t, s, "cancel", WriterOpts{})
	defer w.Close()
	err := Copy(ctx, w, cancelReader{onlyReader{bytes.NewReader(data)}, cancel}, int64(len(data)), "")
	wantErr(t, err, context.Canceled, `"cancel"`)
	if files := blobFiles(t, s); len(files) != 0 {
		t.Fatalf("cancelled copy committed %v", files)
	}
	st, _ := w.Status()
	if st.Offset == 0 || st.Offset >= int64(len(data)) {
		t.Fatalf("cancelled copy stopped at %d", st.Offset)
	}
}

// wrapped is a Writer that is not ours, so Copy takes its generic path.
type wrapped struct{ Writer }

func TestCopyGenericWriter(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := pseudoRandom(9, chunkSize*2+3)
	d := digest.FromBytes(data)
	w := mustWriter(t, s, "generic", WriterOpts{})
	defer w.Close()
	if err := Copy(ctx, wrapped{w}, bytes.NewReader(data), int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBlob(t, s, d), data) {
		t.Fatal("blob differs")
	}
}

func TestInvalidDigests(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	good := digest.FromString("x")
	bad := []digest.Digest{
		"",
		"sha512:" + digest.Digest(strings.Repeat("a", 128)),
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha256:" + digest.Digest(strings.ToUpper(good.Encoded())),
		"sha256:abc",
		good + "0",
		"sha256:../../../etc/passwd",
		"sha256:" + digest.Digest(strings.Repeat("g", 64)),
		digest.Digest(good.Encoded()),
	}
	for _, d := range bad {
		_, err := s.Info(ctx, d)
		wantErr(t, err, errdefs.ErrInvalidArgument)
		_, err = s.ReaderAt(ctx, d)
		wantErr(t, err, errdefs.ErrInvalidArgument)
		_, err = s.BlobPath(d)
		wantErr(t, err, errdefs.ErrInvalidArgument)
		wantErr(t, s.Delete(ctx, d), errdefs.ErrInvalidArgument)
		wantErr(t, s.Verify(ctx, d), errdefs.ErrInvalidArgument)
		if d != "" {
			_, err = s.Writer(ctx, "ref", WriterOpts{Expected: d})
			wantErr(t, err, errdefs.ErrInvalidArgument)
		}
	}
}

func TestMissingBlob(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d := digest.FromString("absent")
	_, err := s.Info(ctx, d)
	wantErr(t, err, errdefs.ErrNotFound, d.String())
	_, err = s.ReaderAt(ctx, d)
	wantErr(t, err, errdefs.ErrNotFound, d.String())
	wantErr(t, s.Delete(ctx, d), errdefs.ErrNotFound, d.String())
	wantErr(t, s.Verify(ctx, d), errdefs.ErrNotFound, d.String())
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d := commitBlob(t, s, "del", []byte("delete me"))
	if err := s.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Info(ctx, d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("info after delete: %v", err)
	}
	wantErr(t, s.Delete(ctx, d), errdefs.ErrNotFound)
}

func TestRefs(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Writer(ctx, "", WriterOpts{})
	wantErr(t, err, errdefs.ErrInvalidArgument)
	_, err = s.Writer(ctx, strings.Repeat("r", maxRefLen+1), WriterOpts{})
	wantErr(t, err, errdefs.ErrInvalidArgument, "1025")
	for _, ref := range []string{strings.Repeat("r", maxRefLen), "../../../escape", "/abs/path", "a\x00b\nc"} {
		w := mustWriter(t, s, ref, WriterOpts{})
		writeIn(t, w, []byte("x"))
		w.Close()
		st, err := s.Status(ctx, ref)
		if err != nil || st.Ref != ref || st.Offset != 1 {
			t.Fatalf("status of %q: %+v, %v", ref, st, err)
		}
	}
	parent, _ := os.ReadDir(filepath.Dir(s.Root()))
	for _, e := range parent {
		if e.Name() == "escape" {
			t.Fatal("a ref became a path outside the store")
		}
	}
	if n := len(ingestDirs(t, s)); n != 4 {
		t.Fatalf("%d ingest folders, want 4", n)
	}
}

func TestWriteAfterClose(t *testing.T) {
	s := newStore(t)
	w := mustWriter(t, s, "closed", WriterOpts{})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	_, err := w.Write([]byte("x"))
	wantErr(t, err, errdefs.ErrFailedPrecondition, "closed")
	wantErr(t, w.Commit(context.Background(), 0, ""), errdefs.ErrFailedPrecondition)
}

// Writers racing with commits (which remove the ingest folder and its lock
// file) never hold one ref at the same time: a lock taken on a lock file
// that was removed meanwhile must not count.
func TestLockSurvivesIngestRemoval(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var holders, maxHolders, commits atomic.Int32 // maxHolders: a count above 1 seen
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				w, err := s.Writer(ctx, "hot", WriterOpts{})
				if errors.Is(err, errdefs.ErrLocked) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				if n := holders.Add(1); n > 1 {
					maxHolders.Store(n)
				}
				w.Write([]byte(fmt.Sprint(g, "-", i)))
				holders.Add(-1)
				err = w.Commit(ctx, 0, "")
				if err != nil && !errors.Is(err, errdefs.ErrExists) {
					errs <- err
				}
				commits.Add(1)
				w.Close()
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if maxHolders.Load() != 0 || commits.Load() == 0 {
		t.Fatalf("%d holders at once, %d commits", maxHolders.Load(), commits.Load())
	}
}

// Ingests of known size get chunks sized for them when the pool has none;
// the bytes stored are the same at every size around the chunk size, and
// a stream longer than its declared size still fails at commit.
func TestKnownSizeIngests(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for i, n := range []int{1, 2, 1000, chunkSize - 2, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 5} {
		b := pseudoRandom(uint64(i+1), n)
		d := digest.FromBytes(b)
		for _, how := range []string{"ReadFrom", "Write"} {
			ref := fmt.Sprintf("sized-%d-%s", n, how)
			w := mustWriter(t, s, ref, WriterOpts{Total: int64(n), Expected: d})
			if how == "ReadFrom" {
				if _, err := w.(io.ReaderFrom).ReadFrom(onlyReader{bytes.NewReader(b)}); err != nil {
					t.Fatalf("%s: %v", ref, err)
				}
			} else {
				writeIn(t, w, b)
			}
			if err := w.Commit(ctx, int64(n), d); err != nil {
				t.Fatalf("commit %s: %v", ref, err)
			}
			w.Close()
			if got := readBlob(t, s, d); !bytes.Equal(got, b) {
				t.Fatalf("%s: stored %d bytes differ from the %d written", ref, len(got), n)
			}
			if err := s.Delete(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	b := pseudoRandom(99, 5000)
	w := mustWriter(t, s, "longer", WriterOpts{Total: 4000})
	defer w.Close()
	if _, err := w.(io.ReaderFrom).ReadFrom(onlyReader{bytes.NewReader(b)}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, w.Commit(ctx, 4000, ""), errdefs.ErrFailedPrecondition, "5000", "4000")
}
