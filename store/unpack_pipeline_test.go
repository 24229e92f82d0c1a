package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

func TestStreamPipe(t *testing.T) {
	want := bytes.Repeat([]byte("0123456789"), 100000)
	// Chunks are recycled once read: smaller, equal to and larger than
	// the recycled size, the bytes come out as they went in.
	for _, size := range []int{333, streamChunk, streamChunk + 7} {
		p := newStreamPipe(4)
		go func() {
			buf := make([]byte, size)
			for r := bytes.NewReader(want); ; {
				n, err := r.Read(buf)
				if n > 0 {
					if _, werr := p.Write(buf[:n]); werr != nil {
						t.Error(werr)
						return
					}
					buf[0] ^= 0xff // the writer reuses its buffer
				}
				if err != nil {
					break
				}
			}
			p.CloseWithError(nil)
		}()
		got, err := io.ReadAll(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("writes of %d: read %d of %d bytes through the pipe, err %v", size, len(got), len(want), err)
		}
	}

	// A large write (fetch hands on whole socket reads) is held as
	// recycled chunks, so the buffer's bound is in chunks of streamChunk.
	p := newStreamPipe(4)
	if n, err := p.Write(bytes.Repeat([]byte{7}, 3*streamChunk+5)); n != 3*streamChunk+5 || err != nil {
		t.Fatalf("large write: %d, %v", n, err)
	}
	if len(p.ch) != 4 {
		t.Fatalf("a write of 3 chunks and 5 bytes is %d chunks in the pipe, want 4", len(p.ch))
	}
	for range 4 {
		if c := <-p.ch; cap(c) != streamChunk {
			t.Fatalf("a chunk of %d bytes (capacity %d), want capacity %d", len(c), cap(c), streamChunk)
		}
	}

	// Bytes written before an error close are read first, then the error.
	broke := errors.New("download broke")
	p = newStreamPipe(4)
	p.Write([]byte("abc"))
	p.CloseWithError(broke)
	got, err := io.ReadAll(p)
	if string(got) != "abc" || !errors.Is(err, broke) {
		t.Fatalf("after an error close: %q, %v", got, err)
	}

	// A reader that leaves unblocks a writer waiting on a full buffer.
	p = newStreamPipe(1)
	p.Write([]byte("x"))
	done := make(chan error)
	go func() { _, err := p.Write([]byte("y")); done <- err }()
	p.CloseRead(errStreamNotNeeded)
	if err := <-done; !errors.Is(err, errStreamNotNeeded) {
		t.Fatalf("write after the reader left: %v", err)
	}
}

// A writer blocked on a full buffer whose reader never comes (the unpacker
// waits for a lower layer) returns once its own side is closed, as fetch
// does when the pull's context ends.
func TestStreamPipeWriterClosedWhileBlocked(t *testing.T) {
	p := newStreamPipe(1)
	if _, err := p.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { _, err := p.Write([]byte("y")); done <- err }()
	p.CloseWithError(context.Canceled)
	if err := <-done; !errors.Is(err, errStreamClosed) {
		t.Fatalf("blocked write after the writer's close: %v", err)
	}
	// What was written before the close is still read, then the cause.
	got, err := io.ReadAll(p)
	if string(got) != "x" || !errors.Is(err, context.Canceled) {
		t.Fatalf("read after the close: %q, %v", got, err)
	}
}
