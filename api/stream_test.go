package api

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// randomReader yields n deterministic pseudo-random bytes without holding them.
func randomReader(seed uint64, n int64) io.Reader {
	var key [32]byte
	key[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(key), n)
}

// deadlock bounds a wait that only a broken implementation makes endless,
// so that it fails with a message instead of hanging the test binary.
const deadlock = 2 * time.Minute

// TestIngestStreams sends 64 MiB and checks the store sees the first bytes
// before the client has produced the rest: a server that buffered the
// body would never get there.
func TestIngestStreams(t *testing.T) {
	const size = 64 << 20
	const head = 1 << 20
	ctx := t.Context()
	fake := newFakeStore()
	sawHead := make(chan struct{})
	fake.onIngestRead = func(ref string, n int64) {
		if n >= head && sawHead != nil {
			close(sawHead)
			sawHead = nil // only the ingest's goroutine touches it
		}
	}
	headSeen := sawHead
	c := serve(t, fake).client

	want := digest.SHA256.Digester()
	src := io.TeeReader(randomReader(1, size), want.Hash())
	pr, pw := io.Pipe()
	go func() {
		if _, err := io.CopyN(pw, src, head); err != nil {
			pw.CloseWithError(err)
			return
		}
		select {
		case <-headSeen:
		case <-time.After(deadlock):
			pw.CloseWithError(errors.New("the store never saw the first MiB: the body is not streamed"))
			return
		}
		_, err := io.Copy(pw, src)
		pw.CloseWithError(err)
	}()
	info, err := c.Ingest(ctx, "big", pr, store.IngestOptions{Size: size})
	if err != nil {
		t.Fatalf("ingest of 64 MiB: %v", err)
	}
	if info.Size != size || info.Digest != want.Digest() {
		t.Fatalf("ingest of 64 MiB gave %s/%d, want %s/%d", info.Digest, info.Size, want.Digest(), size)
	}
	got := digest.SHA256.Digester()
	if err := c.ReadContent(ctx, info.Digest, got.Hash()); err != nil {
		t.Fatal(err)
	}
	if got.Digest() != info.Digest {
		t.Errorf("read back %s, want %s", got.Digest(), info.Digest)
	}
}

func TestIngestLargeLocal(t *testing.T) {
	const size = 64 << 20
	ctx := t.Context()
	s := localBackend().open(t)
	c := serve(t, s).client
	want := digest.SHA256.Digester()
	info, err := c.Ingest(ctx, "big", io.TeeReader(randomReader(2, size), want.Hash()), store.IngestOptions{Size: size})
	if err != nil {
		t.Fatalf("ingest of 64 MiB: %v", err)
	}
	if info.Size != size || info.Digest != want.Digest() {
		t.Fatalf("ingest of 64 MiB gave %s/%d, want %s/%d", info.Digest, info.Size, want.Digest(), size)
	}
	got := digest.SHA256.Digester()
	if err := c.ReadContent(ctx, info.Digest, got.Hash()); err != nil {
		t.Fatal(err)
	}
	if got.Digest() != info.Digest {
		t.Errorf("read back %s, want %s", got.Digest(), info.Digest)
	}
}

// TestExportImportRoundTrip exports from one store and imports into another,
// both through the socket, and compares with the embedded calls.
func TestExportImportRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		src := b.open(t)
		c := serve(t, src).client
		blobs := [][]byte{[]byte("one"), {}, bytes.Repeat([]byte{7}, 1<<20)}
		var ds []digest.Digest
		for i, data := range blobs {
			info, err := c.Ingest(ctx, fmt.Sprint("blob-", i), bytes.NewReader(data), store.IngestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, info.Digest)
		}

		var got, want bytes.Buffer
		if err := c.ExportContent(ctx, &got, nil); err != nil {
			t.Fatalf("export through socket: %v", err)
		}
		if err := src.ExportContent(ctx, &want, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("export through socket (%d bytes) differs from embedded (%d bytes)", got.Len(), want.Len())
		}
		var one bytes.Buffer
		if err := c.ExportContent(ctx, &one, ds[:1]); err != nil {
			t.Fatal(err)
		}
		if names := tarNames(t, one.Bytes()); len(names) != 1 || names[0] != "blobs/sha256/"+ds[0].Encoded() {
			t.Errorf("export of one blob holds %v", names)
		}
		missing := []digest.Digest{ds[0], digest.FromString("not here")}
		var partial, wantPartial bytes.Buffer
		err := c.ExportContent(ctx, &partial, missing)
		wantErr := src.ExportContent(ctx, &wantPartial, missing)
		sameErr(t, "export of a missing blob", err, wantErr, errdefs.ErrNotFound)
		if partial.Len() != wantPartial.Len() {
			t.Errorf("export of a missing blob wrote %d bytes through socket, %d embedded", partial.Len(), wantPartial.Len())
		}

		dst := b.open(t)
		c2 := serve(t, dst).client
		infos, err := c2.ImportContent(ctx, bytes.NewReader(got.Bytes()))
		if err != nil {
			t.Fatalf("import through socket: %v", err)
		}
		if len(infos) != len(ds) {
			t.Errorf("import returned %d blobs, want %d", len(infos), len(ds))
		}
		list, err := c2.ListContent(ctx)
		wantList, wantErr := dst.ListContent(ctx)
		sameResult(t, "ListContent after import", list, err, wantList, wantErr)
		for i, d := range ds {
			var data bytes.Buffer
			if err := c2.ReadContent(ctx, d, &data); err != nil {
				t.Fatalf("read imported %s: %v", d, err)
			}
			if !bytes.Equal(data.Bytes(), blobs[i]) {
				t.Errorf("imported %s has different bytes", d)
			}
		}

		for name, archive := range map[string][]byte{
			"member outside blobs": tarOf(t, "etc/passwd", []byte("root")),
			"member named wrongly": tarOf(t, "blobs/sha256/"+digest.FromString("x").Encoded(), []byte("y")),
		} {
			_, err := c2.ImportContent(ctx, bytes.NewReader(archive))
			_, wantErr := dst.ImportContent(ctx, bytes.NewReader(archive))
			sameErr(t, "import of a bad archive: "+name, err, wantErr, nil)
		}
	})
}

func tarOf(t *testing.T, name string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o444, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	return buf.Bytes()
}

func tarNames(t *testing.T, archive []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatalf("read export: %v", err)
		}
		names = append(names, hdr.Name)
	}
}

// TestReadFailsMidStream: once bytes have gone out the status is sent, so
// a later failure must still reach the caller, with its text and class.
func TestReadFailsMidStream(t *testing.T) {
	ctx := t.Context()
	fake := newFakeStore()
	head := bytes.Repeat([]byte("x"), 100<<10)
	fake.readContent = func(ctx context.Context, d digest.Digest, w io.Writer) error {
		if _, err := w.Write(head); err != nil {
			return err
		}
		return fmt.Errorf("read %s: disk went away \x7f: %w", d, errdefs.ErrDigestMismatch)
	}
	c := serve(t, fake).client
	d := digest.FromString("any")
	var got, want bytes.Buffer
	err := c.ReadContent(ctx, d, &got)
	wantErr := fake.ReadContent(ctx, d, &want)
	sameErr(t, "failure after the first byte", err, wantErr, errdefs.ErrDigestMismatch)
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Errorf("got %d bytes before the failure, want %d", got.Len(), want.Len())
	}
}

// TestCancelReachesStore: a caller giving up cancels the store call in the
// daemon, and the caller gets its context's error.
func TestCancelReachesStore(t *testing.T) {
	fake := newFakeStore()
	started := make(chan struct{})
	seen := make(chan error, 1)
	fake.pull = func(ctx context.Context, ref string, opts store.PullOptions) (store.ImageInfo, error) {
		close(started)
		<-ctx.Done()
		seen <- ctx.Err()
		return store.ImageInfo{}, ctx.Err()
	}
	c := serve(t, fake).client
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.Pull(ctx, "lab/x:1", store.PullOptions{})
		done <- err
	}()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled pull returned %v, want context.Canceled", err)
	}
	select {
	case err := <-seen:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("store saw %v, want context.Canceled", err)
		}
	case <-time.After(deadlock):
		t.Fatal("the store call never saw the cancellation")
	}
}

// TestIngestRefsWithOddCharacters: refs travel in a path segment.
func TestIngestRefsWithOddCharacters(t *testing.T) {
	ctx := t.Context()
	fake := newFakeStore()
	c := serve(t, fake).client
	for _, ref := range []string{".", "..", "a/b", "../../etc/passwd", "with space?&#%", "sha256:abc", "ünïcode"} {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := c.Ingest(ctx, ref, pr, store.IngestOptions{})
			done <- err
		}()
		pw.Write([]byte("partial"))
		sts, err := c.ActiveIngests(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, st := range sts {
			found = found || st.Ref == ref
		}
		if !found {
			t.Errorf("ref %q arrived as %+v", ref, sts)
		}
		pw.Close()
		if err := <-done; err != nil {
			t.Errorf("ingest %q: %v", ref, err)
		}
	}
	if _, err := c.Ingest(ctx, "x", strings.NewReader(""), store.IngestOptions{}); err != nil {
		t.Errorf("empty ingest: %v", err)
	}
}

// TestProgressStreamCoalescesCounts: a thousand byte counts of one blob
// in a burst reach the client as a few lines, each change of status as
// one, and every blob's last line is its last event.
func TestProgressStreamCoalescesCounts(t *testing.T) {
	rec := httptest.NewRecorder()
	ps := newProgressStream(rec, func() {})
	a, b := digest.FromString("a"), digest.FromString("b")
	const total = 1 << 30
	ps.Event(store.ProgressEvent{Digest: a, Total: total, Status: "fetching"})
	for i := int64(1); i <= 1000; i++ {
		ps.Event(store.ProgressEvent{Digest: a, Total: total, Done: i << 20, Status: "fetching"})
		if i == 500 {
			ps.Event(store.ProgressEvent{Digest: b, Total: 10, Done: 10, Status: "done"})
		}
	}
	ps.Event(store.ProgressEvent{Digest: a, Total: total, Done: total, Status: "unpacking"})
	ps.Event(store.ProgressEvent{Digest: a, Total: total, Done: total, Status: "done"})
	if err := ps.finish(map[string]string{"name": "x"}, nil); err != nil {
		t.Fatal(err)
	}
	var lines []streamLine
	for _, l := range strings.Split(strings.TrimSpace(rec.Body.String()), "\n") {
		var sl streamLine
		if err := json.Unmarshal([]byte(l), &sl); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, sl)
	}
	// The burst takes well under a second: at most one count per 100 ms.
	if len(lines) > 20 {
		t.Fatalf("%d lines for 1,004 events in a burst: counts were not coalesced", len(lines))
	}
	var last = map[digest.Digest]store.ProgressEvent{}
	var statuses []string
	for _, l := range lines {
		if l.Event != nil {
			if p, ok := last[l.Event.Digest]; !ok || p.Status != l.Event.Status {
				statuses = append(statuses, l.Event.Digest.Encoded()[:4]+":"+l.Event.Status)
			}
			last[l.Event.Digest] = *l.Event
		}
	}
	want := []string{a.Encoded()[:4] + ":fetching", b.Encoded()[:4] + ":done", a.Encoded()[:4] + ":unpacking", a.Encoded()[:4] + ":done"}
	if strings.Join(statuses, " ") != strings.Join(want, " ") {
		t.Fatalf("status changes %v, want %v", statuses, want)
	}
	if e := last[a]; e.Status != "done" || e.Done != total {
		t.Fatalf("blob a's last line %+v, want done with all %d bytes", e, total)
	}
	if lines[len(lines)-1].Event != nil {
		t.Fatal("the stream does not end with its result")
	}
}
