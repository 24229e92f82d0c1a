package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/store"
)

// errorTrailer carries the ErrorBody of a data stream that failed after its
// first byte, when the status line can no longer say so.
const errorTrailer = "Casfs-Error"

// dataWriter sends a byte stream (blob data, export tar) with the 200 status
// deferred to the first byte: a failure before it is a normal JSON error
// response, a failure after it goes into the Casfs-Error trailer.
type dataWriter struct {
	w           http.ResponseWriter
	contentType string
	started     bool
}

func (d *dataWriter) start() {
	if d.started {
		return
	}
	d.started = true
	h := d.w.Header()
	h.Set("Content-Type", d.contentType)
	h.Set("Trailer", errorTrailer)
	d.w.WriteHeader(http.StatusOK)
}

func (d *dataWriter) Write(p []byte) (int, error) {
	d.start()
	return d.w.Write(p)
}

// finish ends the stream; it returns err when the handler must still write
// it as the error response.
func (d *dataWriter) finish(err error) error {
	if err == nil {
		d.start()
		return nil
	}
	if !d.started {
		return err
	}
	body, _ := errorBody(err)
	d.w.Header().Set(errorTrailer, trailerValue(body))
	return nil
}

func trailerValue(b ErrorBody) string {
	v, _ := json.Marshal(b)
	// JSON escapes every control character but DEL, which a header value
	// must not contain either.
	return strings.ReplaceAll(string(v), "\x7f", `\u007f`)
}

// progressWriteGrace bounds one write of a progress line: a client that
// stops reading must not stall the pull (whose progress callback must not
// block for long); the operation is cancelled instead.
const progressWriteGrace = 30 * time.Second

// progressStream writes a pull/push/fetch as NDJSON: {"event":...} lines,
// then one {"result":...} or {"error":...} line. Events may come from
// several goroutines of the store at once.
type progressStream struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	rc      *http.ResponseController
	cancel  context.CancelFunc
	started bool
	broken  bool
	ended   bool
	last    map[digest.Digest]sentEvent // per blob, the last event written
}

// sentEvent is when an event of a status was written.
type sentEvent struct {
	status string
	at     time.Time
}

// progressInterval bounds how often one blob's counts are streamed while
// its status stays the same: a 1 GiB pull reported one count per MiB, each
// a write, a flush and a wakeup of the client, and the pull waited for
// each (about 0.4 s of a 4 s pull through the daemon). A change of status
// is always written, so the last line of every blob has its final counts.
const progressInterval = 100 * time.Millisecond

func newProgressStream(w http.ResponseWriter, cancel context.CancelFunc) *progressStream {
	return &progressStream{w: w, rc: http.NewResponseController(w), cancel: cancel, last: map[digest.Digest]sentEvent{}}
}

func (p *progressStream) writeLine(line streamLine) {
	if !p.started {
		p.started = true
		p.w.Header().Set("Content-Type", "application/x-ndjson")
		p.w.Header().Set("X-Content-Type-Options", "nosniff")
		p.w.WriteHeader(http.StatusOK)
	}
	if p.broken {
		return
	}
	b, err := json.Marshal(line)
	if err == nil {
		_ = p.rc.SetWriteDeadline(time.Now().Add(progressWriteGrace))
		if _, err = p.w.Write(append(b, '\n')); err == nil {
			err = p.rc.Flush()
		}
		_ = p.rc.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		p.broken = true
		p.cancel() // nobody is listening any more
	}
}

// Event is the store's ProgressFunc.
func (p *progressStream) Event(ev store.ProgressEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	now := time.Now()
	if l, ok := p.last[ev.Digest]; ok && l.status == ev.Status && now.Sub(l.at) < progressInterval {
		return
	}
	p.last[ev.Digest] = sentEvent{status: ev.Status, at: now}
	p.writeLine(streamLine{Event: &ev})
}

// finish writes the last line; it returns err when nothing was streamed yet,
// so that the handler answers with a plain JSON error and its status.
func (p *progressStream) finish(result any, err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended = true
	if err != nil {
		if !p.started {
			return err
		}
		body, _ := errorBody(err)
		p.writeLine(streamLine{ErrorBody: &body})
		return nil
	}
	raw, merr := json.Marshal(result)
	if merr != nil {
		if !p.started {
			return merr
		}
		body, _ := errorBody(merr)
		p.writeLine(streamLine{ErrorBody: &body})
		return nil
	}
	p.writeLine(streamLine{Result: raw})
	return nil
}
