package layers

import (
	"io"
	"runtime"
	"sync"
)

// readAhead decompresses a layer on a goroutine of its own, a few buffers
// ahead of the tar applier that reads it, so that inflating and creating
// files overlap on a machine with a spare core instead of taking turns.
// Cold pulls of the realistic bench image (3 layers, 14k files), five
// each, alternating: medians 1.15 s with it and 1.22 s without on a store
// root without recent deletes; 1.60 and 1.72 s right after a mass delete.
//
// Only the goroutine reads the source. Close stops it and waits for it:
// if it is inside a read of a stream that delivers nothing, Close waits
// for that read, which the stream's own deadline bounds (a pull's
// download has its progress deadline).
type readAhead struct {
	src  io.ReadCloser
	full chan filled
	free chan []byte
	stop chan struct{}
	done chan struct{}
	once sync.Once

	cur  []byte // unread part of buf
	buf  []byte // the buffer being read, to hand back
	err  error  // the source's error, returned once every byte before it is read
	bufs [][]byte
}

type filled struct {
	b   []byte
	err error
}

const (
	readAheadBufs = 4
	readAheadSize = 256 << 10
)

var readAheadPool = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}

// newReadAhead starts reading src ahead, or returns src itself on a
// machine with one core, where there is nothing to overlap.
func newReadAhead(src io.ReadCloser) io.ReadCloser {
	if runtime.GOMAXPROCS(0) < 2 {
		return src
	}
	r := &readAhead{
		src:  src,
		full: make(chan filled, readAheadBufs),
		free: make(chan []byte, readAheadBufs),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for i := 0; i < readAheadBufs; i++ {
		bp := readAheadPool.Get().(*[]byte)
		r.bufs = append(r.bufs, *bp)
		r.free <- *bp
	}
	go r.fill()
	return r
}

func (r *readAhead) fill() {
	defer close(r.done)
	for {
		var b []byte
		select {
		case b = <-r.free:
		case <-r.stop:
			return
		}
		n, err := io.ReadFull(r.src, b)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF // a short last buffer
		}
		if err == io.EOF && n == 0 {
			b = nil
		}
		select {
		case r.full <- filled{b[:n], err}:
		case <-r.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

func (r *readAhead) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.buf != nil {
			r.free <- r.buf[:readAheadSize] // never blocks: there are readAheadBufs
			r.buf = nil
		}
		f := <-r.full
		r.cur, r.buf, r.err = f.b, f.b, f.err
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close stops the goroutine, waits for it, and closes the source.
func (r *readAhead) Close() error {
	r.once.Do(func() { close(r.stop) })
	<-r.done
	for _, b := range r.bufs {
		readAheadPool.Put(&b)
	}
	r.bufs = nil
	return r.src.Close()
}
