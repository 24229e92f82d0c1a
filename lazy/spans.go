package lazy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// span is a byte range [Off, Off+Len) of a layer blob.
type span struct{ Off, Len int64 }

func (s span) end() int64 { return s.Off + s.Len }

// spans is the on-disk partial copy of one layer blob: a sparse file
// "data" holding verified compressed bytes at their offsets in the blob,
// and an append-only log "ranges" of the ranges present ("OFF LEN" lines).
// Data is written before its log line, and every read re-verifies what it
// uses, so a crash leaves at worst a range that fails verification and is
// fetched again.
type spans struct {
	dir  string
	size int64

	mu   sync.Mutex
	data *os.File
	log  *os.File
	have []span // sorted, merged
}

func openSpans(dir string, size int64) (*spans, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	data, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := data.Truncate(size); err != nil {
		data.Close()
		return nil, err
	}
	s := &spans{dir: dir, size: size, data: data}
	if err := s.load(); err != nil {
		data.Close()
		return nil, err
	}
	s.log, err = os.OpenFile(filepath.Join(dir, "ranges"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		data.Close()
		return nil, err
	}
	return s, nil
}

// load reads the ranges log; a torn last line (crash mid-append) and
// ranges outside the blob are ignored.
func (s *spans) load() error {
	b, err := os.ReadFile(filepath.Join(s.dir, "ranges"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	for _, line := range lines[:len(lines)-1] { // the last is "" or torn
		a, b, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		off, err1 := strconv.ParseInt(a, 10, 64)
		n, err2 := strconv.ParseInt(b, 10, 64)
		if err1 != nil || err2 != nil || off < 0 || n <= 0 || off+n > s.size {
			continue
		}
		s.add(span{off, n})
	}
	return nil
}

// CachedBytes is the number of bytes the chunk cache in dir holds (0 when
// there is none), read from its ranges log without opening the cache.
func CachedBytes(dir string) int64 {
	fi, err := os.Stat(filepath.Join(dir, "data"))
	if err != nil {
		return 0
	}
	s := &spans{dir: dir, size: fi.Size()}
	if s.load() != nil {
		return 0
	}
	return s.present()
}

// add merges r into the sorted set. Callers hold mu (or own s alone).
func (s *spans) add(r span) {
	i := sort.Search(len(s.have), func(i int) bool { return s.have[i].end() >= r.Off })
	j := i
	for j < len(s.have) && s.have[j].Off <= r.end() {
		r = span{min(r.Off, s.have[j].Off), max(r.end(), s.have[j].end()) - min(r.Off, s.have[j].Off)}
		j++
	}
	s.have = append(s.have[:i], append([]span{r}, s.have[j:]...)...)
}

// has reports whether [off, off+n) is present.
func (s *spans) has(off, n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.have), func(i int) bool { return s.have[i].end() > off })
	return i < len(s.have) && s.have[i].Off <= off && s.have[i].end() >= off+n
}

// read copies present bytes; the caller checked has.
func (s *spans) read(off, n int64) ([]byte, error) {
	b := make([]byte, n)
	if err := s.readInto(off, b); err != nil {
		return nil, err
	}
	return b, nil
}

// readInto fills b with the cached bytes at off.
func (s *spans) readInto(off int64, b []byte) error {
	if _, err := s.data.ReadAt(b, off); err != nil && !(errors.Is(err, io.EOF) && off+int64(len(b)) == s.size) {
		return err
	}
	return nil
}

// put stores verified bytes at off.
func (s *spans) put(off int64, b []byte) error {
	if off < 0 || off+int64(len(b)) > s.size || len(b) == 0 {
		return fmt.Errorf("range %d+%d outside the blob's %d bytes", off, len(b), s.size)
	}
	if _, err := s.data.WriteAt(b, off); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := fmt.Fprintf(s.log, "%d %d\n", off, len(b)); err != nil {
		return err
	}
	s.add(span{off, int64(len(b))})
	return nil
}

// missing lists the ranges of the blob not present yet.
func (s *spans) missing() []span {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []span
	at := int64(0)
	for _, h := range s.have {
		if h.Off > at {
			out = append(out, span{at, h.Off - at})
		}
		at = h.end()
	}
	if at < s.size {
		out = append(out, span{at, s.size - at})
	}
	return out
}

// present is the number of bytes present.
func (s *spans) present() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, h := range s.have {
		n += h.Len
	}
	return n
}

func (s *spans) close() error {
	return errors.Join(s.data.Close(), s.log.Close())
}

// reset drops every range and its bytes.
func (s *spans) reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.have = nil
	if err := s.log.Truncate(0); err != nil {
		return err
	}
	if err := s.data.Truncate(0); err != nil {
		return err
	}
	return s.data.Truncate(s.size)
}
