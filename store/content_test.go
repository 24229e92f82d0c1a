package store

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
)

func openTemp(t *testing.T) *Local {
	t.Helper()
	s, err := Open(t.TempDir(), Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestResolveDigest(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	db, err := s.Index()
	if err != nil {
		t.Fatal(err)
	}
	// Two records that share a 14-character prefix (records only: the
	// resolver works on the index, as a user's prefix names a known blob).
	a := digest.Digest("sha256:0123456789abcd" + strings.Repeat("0", 50))
	b := digest.Digest("sha256:0123456789abcd" + strings.Repeat("1", 50))
	for _, d := range []digest.Digest{a, b} {
		if err := db.Blobs().Put(ctx, d.String(), index.Blob{Digest: d, Size: 1, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		in   string
		want digest.Digest
		err  error
		msg  string
	}{
		{in: a.String(), want: a},
		{in: a.Encoded(), want: a},
		{in: "0123456789abcd0", want: a},
		{in: "0123456789abcd1", want: b},
		{in: "0123456789abcd", err: errdefs.ErrInvalidArgument, msg: "ambiguous"},
		{in: "0123456789a", err: errdefs.ErrInvalidArgument, msg: "at least 12"},
		{in: "0123456789abcdX", err: errdefs.ErrInvalidArgument},
		{in: "ffffffffffffff", err: errdefs.ErrNotFound, msg: "no blob matches"},
		{in: "sha512:abcd", err: errdefs.ErrInvalidArgument},
	}
	for _, tc := range cases {
		got, err := s.ResolveDigest(ctx, tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("ResolveDigest(%q) = %v, want %v containing %q", tc.in, err, tc.err, tc.msg)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ResolveDigest(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestIngestRecordsAndAdoptsOrphans(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	data := []byte("orphan")
	info, err := s.Ingest(ctx, "r", bytes.NewReader(data), IngestOptions{})
	if err != nil || info.Digest != digest.FromBytes(data) || info.Size != 6 {
		t.Fatalf("ingest: %+v %v", info, err)
	}
	// Drop the record, as a crash between commit and record would.
	db, _ := s.Index()
	if err := db.Blobs().Delete(ctx, info.Digest.String()); err != nil {
		t.Fatal(err)
	}
	problems, err := s.VerifyContent(ctx, nil)
	if err != nil || len(problems) != 0 {
		t.Fatalf("verify: %v %v", problems, err)
	}
	if _, err := s.ContentInfo(ctx, info.Digest); err != nil {
		t.Fatalf("verify did not adopt the unrecorded blob: %v", err)
	}
	// Ingesting content that exists succeeds and keeps one record.
	again, err := s.Ingest(ctx, "r2", bytes.NewReader(data), IngestOptions{})
	if err != nil || again.Digest != info.Digest {
		t.Fatalf("re-ingest: %+v %v", again, err)
	}
	all, _ := s.ListContent(ctx)
	if len(all) != 1 {
		t.Fatalf("%d records after re-ingest", len(all))
	}
}

// TestCommitContentRecordsWithLabels: one call commits and records, with
// labels; committing the same content again says ErrExists and keeps the
// record.
func TestCommitContentRecordsWithLabels(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	data := []byte("committed and recorded at once")
	w, err := s.Blobs().Writer(ctx, "one-step", cas.WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	info, err := s.CommitContent(ctx, w, int64(len(data)), "", map[string]string{"k": "v"})
	if err != nil || info.Digest != digest.FromBytes(data) || info.Size != int64(len(data)) || info.Labels["k"] != "v" {
		t.Fatalf("CommitContent: %+v %v", info, err)
	}
	got, err := s.ContentInfo(ctx, info.Digest)
	if err != nil || got.Labels["k"] != "v" || got.CreatedAt.IsZero() {
		t.Fatalf("record after CommitContent: %+v %v", got, err)
	}
	w, err = s.Blobs().Writer(ctx, "again", cas.WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if _, err := s.CommitContent(ctx, w, 0, info.Digest, nil); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("second commit: %v, want ErrExists", err)
	}
}
