package layers

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"testing"
	"time"
)

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

// TestReadAheadBytes: every byte arrives in order whatever the read sizes,
// then EOF, and the source is closed once.
func TestReadAheadBytes(t *testing.T) {
	for _, size := range []int{0, 1, readAheadSize - 1, readAheadSize, readAheadSize*readAheadBufs*3 + 12345} {
		want := make([]byte, size)
		rand.New(rand.NewSource(int64(size))).Read(want)
		src := &closeCounter{Reader: bytes.NewReader(want)}
		r := newReadAhead(src)
		var got bytes.Buffer
		buf := make([]byte, 70_000)
		rng := rand.New(rand.NewSource(1))
		for {
			n, err := r.Read(buf[:1+rng.Intn(len(buf)-1)])
			got.Write(buf[:n])
			if err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("size %d: read %d bytes that differ from the %d written", size, got.Len(), len(want))
		}
		if n, err := r.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("size %d: read after EOF: %d, %v", size, n, err)
		}
		if err := r.Close(); err != nil || src.closed != 1 {
			t.Fatalf("size %d: close: %v, source closed %d times", size, err, src.closed)
		}
	}
}

// TestReadAheadError: a source's error comes after every byte it
// delivered before it.
func TestReadAheadError(t *testing.T) {
	boom := errors.New("boom")
	data := bytes.Repeat([]byte("x"), readAheadSize+10)
	r := newReadAhead(&closeCounter{Reader: io.MultiReader(bytes.NewReader(data), errReader{boom})})
	got, err := io.ReadAll(r)
	if !errors.Is(err, boom) || len(got) != len(data) {
		t.Fatalf("got %d bytes and %v, want %d and %v", len(got), err, len(data), boom)
	}
	r.Close()
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestReadAheadCloseEarly: closing before the end stops the goroutine,
// which reads no further than the buffers it had free.
func TestReadAheadCloseEarly(t *testing.T) {
	src := &countingSource{}
	r := newReadAhead(src)
	if _, err := io.ReadFull(r, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if max := int64(readAheadSize * (readAheadBufs + 1)); src.n > max {
		t.Fatalf("read %d bytes of the source, want at most %d", src.n, max)
	}
}

// countingSource is an endless stream of zeros that counts what it gave.
type countingSource struct{ n int64 }

func (c *countingSource) Read(p []byte) (int, error) {
	c.n += int64(len(p))
	clear(p)
	return len(p), nil
}
func (c *countingSource) Close() error { return nil }
