package index

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/casfs/casfs/errdefs"
	badger "github.com/dgraph-io/badger/v4"
)

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Images().Put(ctx, "lab/x:1", Image{Name: "lab/x:1", Labels: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir)
	got, err := db.Images().Get(ctx, "lab/x:1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "lab/x:1" || got.Labels["k"] != "v" {
		t.Fatalf("after reopen got %+v", got)
	}
}

func TestCloseTwiceAndUseAfterClose(t *testing.T) {
	db, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	// Calls after Close fail cleanly instead of panicking inside badger.
	checks := map[string]error{
		"get":    func() error { _, err := db.Blobs().Get(ctx, "a"); return err }(),
		"put":    db.Blobs().Put(ctx, "a", Blob{}),
		"list":   db.Blobs().List(ctx, "", func(string, Blob) error { return nil }),
		"count":  func() error { _, err := db.Blobs().Count(ctx); return err }(),
		"many":   db.Blobs().PutMany(ctx, []Entry[Blob]{{Key: "a"}}),
		"update": db.Update(ctx, func(*Tx) error { return nil }),
	}
	for name, err := range checks {
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "closed") {
			t.Errorf("%s after close: %v, want a closed error", name, err)
		}
	}
}

func TestInUseSameProcess(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir)
	checkInUse(t, dir, os.Getpid(), err)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Once released, the store opens again.
	openTest(t, dir)
}

func TestInUseOtherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd, stdin := startHolder(t, dir)
	_, err := Open(dir)
	checkInUse(t, dir, cmd.Process.Pid, err)

	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	openTest(t, dir)
}

// An unsynced commit is in the page cache once Update returns: killing the
// process right after loses nothing.
func TestUnsyncedWriteSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	cmd, _ := startHolder(t, dir, holdWriteEnv+"=1")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	got, err := openTest(t, dir).Snapshots().Get(ctx, "s")
	if err != nil || got.ID != "unsynced" {
		t.Fatalf("after kill: %+v, %v; want the record with ID unsynced", got, err)
	}
}

// startHolder starts the test binary holding the database in dir (see
// holdEnv) and waits until it is ready; closing stdin ends it cleanly.
func startHolder(t *testing.T, dir string, env ...string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), holdEnv+"="+dir), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	line := make([]byte, len("ready\n"))
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "ready\n" {
		t.Fatalf("child did not get ready: %q %v; stderr: %s", line, err, stderr.String())
	}
	return cmd, stdin
}

// checkInUse wants the in-use error naming the process that holds dir.
func checkInUse(t *testing.T, dir string, pid int, err error) {
	t.Helper()
	if !errors.Is(err, errdefs.ErrInUse) {
		t.Fatalf("second open: %v, want ErrInUse", err)
	}
	msg := err.Error()
	want := fmt.Sprintf("store %s is locked by process %d", dir, pid)
	if msg != want {
		t.Fatalf("in-use message %q, want %q", msg, want)
	}
}

func TestSchemaVersion(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if got := rawGet(t, dir, "schema"); got != "1" {
		t.Fatalf("schema key %q, want \"1\"", got)
	}

	for _, tc := range []struct{ value, want string }{
		{"2", "schema version 2 is newer"},
		{"banana", "unreadable schema version"},
		{"0", "unknown schema version 0"},
	} {
		rawSet(t, dir, "schema", tc.value)
		_, err := Open(dir)
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("open with schema %q: %v, want ErrFailedPrecondition saying %q", tc.value, err, tc.want)
		}
		// A refused open must release the store: the raw write below and
		// the next Open need the lock.
	}
	rawSet(t, dir, "schema", "1")
	openTest(t, dir)
}

func rawDB(t *testing.T, dir string) *badger.DB {
	t.Helper()
	bdb, err := badger.Open(badgerOptions(dir).WithBypassLockGuard(false))
	if err != nil {
		t.Fatal(err)
	}
	return bdb
}

func rawGet(t *testing.T, dir, key string) string {
	bdb := rawDB(t, dir)
	defer bdb.Close()
	var v []byte
	err := bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(key))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func rawSet(t *testing.T, dir, key, value string) {
	bdb := rawDB(t, dir)
	defer bdb.Close()
	if err := bdb.Update(func(txn *badger.Txn) error { return txn.Set([]byte(key), []byte(value)) }); err != nil {
		t.Fatal(err)
	}
}

// badger's own lock and ours are the same flock, so a plain badger program
// holding the directory also makes Open report "in use".
func TestInUseByPlainBadger(t *testing.T) {
	dir := t.TempDir()
	bdb := rawDB(t, dir)
	_, err := Open(dir)
	checkInUse(t, dir, os.Getpid(), err)
	bdb.Close()
}

func TestEmptyStoreIsSmall(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var used int64
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Name() == spareFile {
			// Space set aside on purpose (see space.go), and only that.
			if got := fi.Sys().(*syscall.Stat_t).Blocks * 512; got != spareSize {
				return fmt.Errorf("spare file holds %d bytes, want %d", got, spareSize)
			}
			return nil
		}
		used += fi.Sys().(*syscall.Stat_t).Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if used > 8<<20 {
		t.Fatalf("empty store uses %d bytes on disk, want under 8 MiB", used)
	}
	t.Logf("empty store: %d KiB on disk", used>>10)
}

// TestBadgerLogsBelowDebug: badger's routine logs show at the trace level
// only, so that --log-level debug shows casfs's own lines.
func TestBadgerLogsBelowDebug(t *testing.T) {
	old := slog.Default()
	defer slog.SetDefault(old)
	for _, tc := range []struct {
		level slog.Level
		want  bool
	}{{slog.LevelDebug, false}, {LevelTrace, true}} {
		var buf bytes.Buffer
		slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level})))
		db, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		out := buf.String()
		if got := strings.Contains(out, "component=badger"); got != tc.want {
			t.Fatalf("at level %v: badger lines %v, want %v:\n%s", tc.level, got, tc.want, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line != "" && !strings.Contains(line, "level=DEBUG-4") {
				t.Fatalf("badger logged above trace: %s", line)
			}
		}
	}
}

// A process killed between creating a value log or a memtable and writing
// its header leaves an empty file; the index must still open, with its data.
func TestOpenAfterKillLeftEmptyLog(t *testing.T) {
	for _, name := range []string{"000099.vlog", "00099.mem"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			db, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Images().Put(ctx, "lab/x:1", Image{Name: "lab/x:1"}); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			db = openTest(t, dir)
			if got, err := db.Images().Get(ctx, "lab/x:1"); err != nil || got.Name != "lab/x:1" {
				t.Fatalf("after reopen: %+v, %v", got, err)
			}
		})
	}
}
