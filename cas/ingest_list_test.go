package cas

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/errdefs"
)

// TestIngestsLockedResumableAndRefless: Ingests tells a held ingest from a
// released one and lists a folder a writer left before writing its ref;
// DiscardIngest removes the released ones and refuses the held one.
func TestIngestsLockedResumableAndRefless(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	held, err := s.Writer(ctx, "held", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	left, err := s.Writer(ctx, "left", WriterOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := left.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := left.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(s.ingestRoot(), "orphan"), 0o700); err != nil {
		t.Fatal(err)
	}

	ins, err := s.Ingests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byRef := map[string]Ingest{}
	for _, in := range ins {
		byRef[in.Ref] = in
	}
	if len(ins) != 3 {
		t.Fatalf("Ingests = %+v, want 3 folders", ins)
	}
	if in := byRef["held"]; !in.Locked {
		t.Errorf("held ingest: %+v, want Locked", in)
	}
	if in := byRef["left"]; in.Locked || in.Size != 5 || in.Updated.IsZero() {
		t.Errorf("left ingest: %+v, want unlocked with 5 bytes and a time", in)
	}
	if in := byRef[""]; in.Name != "orphan" || in.Locked {
		t.Errorf("refless folder: %+v, want orphan, unlocked", in)
	}

	if err := s.DiscardIngest(ctx, byRef["held"]); !errors.Is(err, errdefs.ErrLocked) {
		t.Errorf("DiscardIngest(held) = %v, want ErrLocked", err)
	}
	for _, ref := range []string{"left", ""} {
		if err := s.DiscardIngest(ctx, byRef[ref]); err != nil {
			t.Errorf("DiscardIngest(%q): %v", ref, err)
		}
	}
	if err := s.DiscardIngest(ctx, Ingest{Name: "../x"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("DiscardIngest(../x) = %v, want ErrInvalidArgument", err)
	}
	ins, err = s.Ingests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 1 || ins[0].Ref != "held" {
		t.Errorf("after discarding: %+v, want only the held ingest", ins)
	}
}

func TestHeldFlocks(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if heldFlocks()[fileID(p)] {
		t.Fatal("unlocked file reported as held")
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if !heldFlocks()[fileID(p)] {
		t.Fatalf("flocked file %s not found in /proc/locks", fileID(p))
	}
}
