package store

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestStreamPipe(t *testing.T) {
	want := bytes.Repeat([]byte("0123456789"), 10000)
	p := newStreamPipe(4)
	go func() {
		buf := make([]byte, 333)
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
		t.Fatalf("read %d of %d bytes through the pipe, err %v", len(got), len(want), err)
	}

	// Bytes written before an error close are read first, then the error.
	broke := errors.New("download broke")
	p = newStreamPipe(4)
	p.Write([]byte("abc"))
	p.CloseWithError(broke)
	got, err = io.ReadAll(p)
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
