package index

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"testing"
)

// holdEnv makes the test binary, re-executed by a test, open the database
// in the named directory, say "ready", and hold it until stdin closes: a
// real second casfs process holding the store.
const holdEnv = "CASFS_INDEX_TEST_HOLD"

// holdWriteEnv makes that process first write snapshot record "s" with an
// Unsynced context.
const holdWriteEnv = "CASFS_INDEX_TEST_WRITE_UNSYNCED"

func TestMain(m *testing.M) {
	if dir := os.Getenv(holdEnv); dir != "" {
		os.Exit(holdDB(dir))
	}
	os.Exit(m.Run())
}

func holdDB(dir string) int {
	db, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if os.Getenv(holdWriteEnv) != "" {
		if err := db.Snapshots().Put(Unsynced(context.Background()), "s", Snapshot{ID: "unsynced"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	if err := db.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func openTest(t testing.TB, dir string) *DB {
	t.Helper()
	db, err := Open(dir)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return db
}

func newDB(t testing.TB) *DB {
	t.Helper()
	return openTest(t, t.TempDir())
}

var ctx = context.Background()
