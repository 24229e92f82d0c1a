package cas

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/diskspace"
	"github.com/casfs/casfs/internal/testenv"
)

// An ingest stops with ENOSPC before it takes the space kept for the
// metadata database, and a writer that ran out of space removes its partial
// data on Close unless asked to keep it.
func TestIngestStopsAtSpaceReserve(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(map[bool]string{false: "removed", true: "kept"}[keep], func(t *testing.T) {
			t.Parallel()
			root := testenv.SmallFS(t, diskspace.Reserve+24<<20)
			s, err := Open(root)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			before, err := diskspace.Free(root)
			if err != nil {
				t.Fatal(err)
			}
			w, err := s.Writer(ctx, "big", WriterOpts{KeepOnNoSpace: keep})
			if err != nil {
				t.Fatal(err)
			}
			data := pseudoRandom(31, 48<<20)
			err = Copy(ctx, w, onlyReader{strings.NewReader(string(data))}, int64(len(data)), "")
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "ENOSPC") || !strings.Contains(err.Error(), `"big"`) {
				t.Fatalf("copy of 48 MiB onto 24 MiB above the reserve: %v", err)
			}
			if err := w.Close(); err != nil && !(keep && errors.Is(err, syscall.ENOSPC)) {
				t.Fatalf("close: %v", err)
			}
			free, err := diskspace.Free(root)
			if err != nil {
				t.Fatal(err)
			}
			st, err := s.Status(ctx, "big")
			if keep {
				if err != nil || st.Offset == 0 {
					t.Fatalf("kept ingest: %+v, %v", st, err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("ingest after ENOSPC: %+v, %v", st, err)
			}
			if free < before-1<<20 {
				t.Fatalf("%d bytes free after the partial ingest was removed, %d before it", free, before)
			}
			if n := countAll(t, filepath.Join(root, "ingest")); n != 0 {
				t.Fatalf("%d files left under ingest/", n)
			}
		})
	}
}

func countAll(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			n++
		}
		return nil
	})
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return n
}
