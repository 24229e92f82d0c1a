package cas

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/errdefs"
)

// Ingest is one ingest folder as a checker sees it: also one that has no
// ref yet (a writer died before writing it), and whether a writer holds it.
type Ingest struct {
	Name    string    // the folder's name under ingest/
	Ref     string    // "" while the folder holds no ref
	Size    int64     // bytes in its data file
	Updated time.Time // when its data file (else the folder) last changed
	// Locked is set when a writer holds the ingest's lock now; it is read
	// from /proc/locks without taking the lock, so it never fails a writer
	// that starts at the same moment.
	Locked bool
}

// Ingests lists every ingest folder, locked or not, sorted by name.
func (s *Store) Ingests(ctx context.Context) ([]Ingest, error) {
	ents, err := os.ReadDir(s.ingestRoot())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list ingests: %w", err)
	}
	held := heldFlocks()
	var out []Ingest
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(s.ingestRoot(), e.Name())
		in := Ingest{Name: e.Name(), Updated: lastWrite(dir)}
		if ref, err := os.ReadFile(filepath.Join(dir, fileRef)); err == nil {
			in.Ref = string(ref)
		}
		if fi, err := os.Stat(filepath.Join(dir, fileData)); err == nil {
			in.Size = fi.Size()
		}
		in.Locked = held[fileID(filepath.Join(dir, fileLock))]
		out = append(out, in)
	}
	return out, nil
}

// DiscardIngest removes an ingest Ingests listed: through Abort when it has
// a ref (ErrLocked while a writer holds it), else its folder.
func (s *Store) DiscardIngest(ctx context.Context, in Ingest) error {
	if in.Ref != "" {
		return s.Abort(ctx, in.Ref)
	}
	if in.Name == "" || in.Name != filepath.Base(in.Name) || strings.HasPrefix(in.Name, ".") {
		return fmt.Errorf("ingest folder %q: %w", in.Name, errdefs.ErrInvalidArgument)
	}
	return os.RemoveAll(filepath.Join(s.ingestRoot(), in.Name))
}

// lastWrite is when an ingest last changed: its data file, else its folder.
func lastWrite(dir string) time.Time {
	for _, name := range []string{fileData, fileUpdatedAt, ""} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return fi.ModTime()
		}
	}
	return time.Time{}
}

// fileID names a file the way /proc/locks does: "major:minor:inode", the
// device numbers in hex.
func fileID(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
}

// heldFlocks reads the files with a granted flock from /proc/locks. nil
// (nothing held) when /proc/locks cannot be read.
func heldFlocks() map[string]bool {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters have "->".
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] == "->" || fields[1] != "FLOCK" {
			continue
		}
		out[fields[5]] = true
	}
	return out
}
