package api

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// TestContentParity runs every content method through the socket and
// embedded on the same store, and expects the same answers and errors.
func TestContentParity(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		s := b.open(t)
		c := serve(t, s).client

		dataA := []byte("hello through the socket\n")
		dA := digest.FromBytes(dataA)
		infoA, err := c.Ingest(ctx, "ref-a", bytes.NewReader(dataA), store.IngestOptions{Expected: dA, Size: int64(len(dataA))})
		if err != nil {
			t.Fatalf("ingest through socket: %v", err)
		}
		if infoA.Digest != dA || infoA.Size != int64(len(dataA)) {
			t.Fatalf("ingest through socket gave %s/%d, want %s/%d", infoA.Digest, infoA.Size, dA, len(dataA))
		}
		want, err := s.ContentInfo(ctx, dA)
		sameResult(t, "info of socket ingest", infoA, nil, want, err)

		dataB := bytes.Repeat([]byte("b"), 3<<20)
		dB := digest.FromBytes(dataB)
		if _, err := s.Ingest(ctx, "ref-b", bytes.NewReader(dataB), store.IngestOptions{}); err != nil {
			t.Fatal(err)
		}
		dMissing := digest.FromString("never stored")

		t.Run("info", func(t *testing.T) {
			for _, d := range []digest.Digest{dA, dB, dMissing} {
				got, err := c.ContentInfo(ctx, d)
				want, wantErr := s.ContentInfo(ctx, d)
				sameResult(t, "ContentInfo "+d.String(), got, err, want, wantErr)
			}
			_, err := c.ContentInfo(ctx, dMissing)
			if !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("ContentInfo of a missing blob: %v, want not found", err)
			}
		})

		t.Run("list", func(t *testing.T) {
			got, err := c.ListContent(ctx)
			want, wantErr := s.ListContent(ctx)
			sameResult(t, "ListContent", got, err, want, wantErr)
			if len(got) != 2 {
				t.Errorf("ListContent through socket: %d blobs, want 2", len(got))
			}
		})

		t.Run("resolve", func(t *testing.T) {
			unused := "0123456789ab"
			for strings.HasPrefix(dA.Encoded(), unused) || strings.HasPrefix(dB.Encoded(), unused) {
				unused = "f" + unused[1:]
			}
			for _, in := range []string{dA.String(), dA.Encoded(), dA.Encoded()[:12], dB.Encoded()[:20], "abc", "sha256:zz", unused, "", "sha512:" + dA.Encoded()} {
				got, err := c.ResolveDigest(ctx, in)
				want, wantErr := s.ResolveDigest(ctx, in)
				sameResult(t, "ResolveDigest "+in, got, err, want, wantErr)
			}
			if _, err := c.ResolveDigest(ctx, "abc"); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("ResolveDigest abc: %v, want invalid argument", err)
			}
			if _, err := c.ResolveDigest(ctx, unused); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("ResolveDigest %s: %v, want not found", unused, err)
			}
		})

		t.Run("read", func(t *testing.T) {
			for _, tc := range []struct {
				d    digest.Digest
				data []byte
			}{{dA, dataA}, {dB, dataB}} {
				var got bytes.Buffer
				if err := c.ReadContent(ctx, tc.d, &got); err != nil {
					t.Fatalf("ReadContent %s: %v", tc.d, err)
				}
				if !bytes.Equal(got.Bytes(), tc.data) {
					t.Errorf("ReadContent %s: %d bytes differ from the %d ingested", tc.d, got.Len(), len(tc.data))
				}
			}
			var got, want bytes.Buffer
			err := c.ReadContent(ctx, dMissing, &got)
			wantErr := s.ReadContent(ctx, dMissing, &want)
			sameErr(t, "ReadContent missing", err, wantErr, errdefs.ErrNotFound)
			if got.Len() != 0 {
				t.Errorf("ReadContent of a missing blob wrote %d bytes", got.Len())
			}
		})

		t.Run("labels", func(t *testing.T) {
			got, err := c.LabelContent(ctx, dA, map[string]string{"a": "1", "b": "2"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.Labels["a"] != "1" || got.Labels["b"] != "2" {
				t.Errorf("labels through socket: %v", got.Labels)
			}
			want, err := s.ContentInfo(ctx, dA)
			sameResult(t, "info after labelling through socket", got, nil, want, err)
			want, err = s.LabelContent(ctx, dA, nil, []string{"a"})
			if err != nil {
				t.Fatal(err)
			}
			got, err = c.ContentInfo(ctx, dA)
			sameResult(t, "info after labelling embedded", got, err, want, nil)
			_, err = c.LabelContent(ctx, dMissing, map[string]string{"x": "y"}, nil)
			_, wantErr := s.LabelContent(ctx, dMissing, map[string]string{"x": "y"}, nil)
			sameErr(t, "LabelContent missing", err, wantErr, errdefs.ErrNotFound)
		})

		t.Run("verify", func(t *testing.T) {
			for _, ds := range [][]digest.Digest{nil, {dA}, {dA, dB}, {dMissing}} {
				got, err := c.VerifyContent(ctx, ds)
				want, wantErr := s.VerifyContent(ctx, ds)
				sameResult(t, "VerifyContent", got, err, want, wantErr)
			}
		})

		t.Run("ingest errors", func(t *testing.T) {
			_, err := c.Ingest(ctx, "", strings.NewReader("x"), store.IngestOptions{})
			_, wantErr := s.Ingest(ctx, "", strings.NewReader("x"), store.IngestOptions{})
			sameErr(t, "empty ref", err, wantErr, errdefs.ErrInvalidArgument)

			_, err = c.Ingest(ctx, "bad-expected", strings.NewReader("x"), store.IngestOptions{Expected: "sha256:nothex"})
			_, wantErr = s.Ingest(ctx, "bad-expected", strings.NewReader("x"), store.IngestOptions{Expected: "sha256:nothex"})
			sameErr(t, "malformed expected digest", err, wantErr, errdefs.ErrInvalidArgument)

			wrong := digest.FromString("something else")
			_, err = c.Ingest(ctx, "mismatch", strings.NewReader("payload"), store.IngestOptions{Expected: wrong})
			_, wantErr = s.Ingest(ctx, "mismatch-embedded", strings.NewReader("payload"), store.IngestOptions{Expected: wrong})
			if wantErr == nil {
				t.Fatal("embedded ingest with the wrong expected digest succeeded")
			}
			sameErrText(t, "digest mismatch", err, wantErr, strings.ReplaceAll(wantErr.Error(), "mismatch-embedded", "mismatch"), nil)
			if !errors.Is(err, errdefs.ErrDigestMismatch) && !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("digest mismatch through socket: %v is neither a digest mismatch nor a failed precondition", err)
			}
		})

		t.Run("locked ref", func(t *testing.T) {
			// The first upload holds the ref: its body is a pipe, and a
			// write into the pipe returns only once the server asked for
			// the body (100 Continue), which it does once the store reads,
			// that is with the ref's lock held.
			pr, pw := io.Pipe()
			first := make(chan error, 1)
			go func() {
				_, err := c.Ingest(ctx, "held", pr, store.IngestOptions{})
				first <- err
			}()
			if _, err := pw.Write([]byte("first half ")); err != nil {
				t.Fatal(err)
			}
			_, err := c.Ingest(ctx, "held", strings.NewReader("other"), store.IngestOptions{})
			_, wantErr := s.Ingest(ctx, "held", strings.NewReader("other"), store.IngestOptions{})
			sameErr(t, "locked ref", err, wantErr, errdefs.ErrLocked)
			pw.Write([]byte("second half"))
			pw.Close()
			if err := <-first; err != nil {
				t.Fatalf("the ingest holding the ref failed: %v", err)
			}
		})

		t.Run("resume", func(t *testing.T) {
			full := bytes.Repeat([]byte("0123456789"), 100_000)
			d := digest.FromBytes(full)
			_, err := s.Ingest(ctx, "resume", &failingReader{r: bytes.NewReader(full[:len(full)/2]), err: io.ErrUnexpectedEOF}, store.IngestOptions{Expected: d, Size: int64(len(full))})
			if err == nil {
				t.Fatal("an ingest whose reader failed succeeded")
			}
			got, err := c.ActiveIngests(ctx)
			want, wantErr := s.ActiveIngests(ctx)
			sameResult(t, "ActiveIngests", got, err, want, wantErr)
			var off int64 = -1
			for _, st := range got {
				if st.Ref == "resume" {
					off = st.Offset
				}
			}
			if off < 0 {
				t.Fatalf("ActiveIngests through socket does not list the interrupted ingest: %+v", got)
			}
			t.Logf("the interrupted ingest kept %d of %d bytes", off, len(full))
			var resumed []int64
			info, err := c.Ingest(ctx, "resume", bytes.NewReader(full), store.IngestOptions{Expected: d, Size: int64(len(full)), Resumed: func(o int64) { resumed = append(resumed, o) }})
			if err != nil {
				t.Fatalf("resumed ingest: %v", err)
			}
			if info.Digest != d {
				t.Errorf("resumed ingest gave %s, want %s", info.Digest, d)
			}
			switch {
			case off > 0 && (len(resumed) != 1 || resumed[0] != off):
				t.Errorf("Resumed called with %v, want once with %d", resumed, off)
			case off == 0 && len(resumed) != 0:
				t.Errorf("Resumed called with %v for an ingest at offset 0", resumed)
			}
		})

		t.Run("remove", func(t *testing.T) {
			if err := c.RemoveContent(ctx, dB); err != nil {
				t.Fatalf("RemoveContent through socket: %v", err)
			}
			_, err := s.ContentInfo(ctx, dB)
			if !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("blob still there after removal through socket: %v", err)
			}
			err = c.RemoveContent(ctx, dB)
			wantErr := s.RemoveContent(ctx, dB)
			sameErr(t, "RemoveContent twice", err, wantErr, errdefs.ErrNotFound)
			_, err = c.ContentInfo(ctx, dB)
			sameErr(t, "ContentInfo after removal", err, wantErr, errdefs.ErrNotFound)
		})

		t.Run("corrupt", func(t *testing.T) {
			b.corrupt(t, s, dA)
			var got, want bytes.Buffer
			err := c.ReadContent(ctx, dA, &got)
			wantErr := s.ReadContent(ctx, dA, &want)
			sameErr(t, "ReadContent of a corrupt blob", err, wantErr, errdefs.ErrDigestMismatch)
			if got.Len() != 0 || want.Len() != 0 {
				t.Errorf("a corrupt blob was served: %d bytes through socket, %d embedded", got.Len(), want.Len())
			}
			problems, err := c.VerifyContent(ctx, nil)
			wantProblems, wantErr := s.VerifyContent(ctx, nil)
			sameResult(t, "VerifyContent with a corrupt blob", problems, err, wantProblems, wantErr)
			if len(problems) != 1 || problems[0].Digest != dA {
				t.Errorf("VerifyContent through socket: %+v, want one problem for %s", problems, dA)
			}
		})
	})
}
