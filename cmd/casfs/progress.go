package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/casfs/casfs/store"
)

// progress shows pull and push progress: one bar per blob and a total line
// on a terminal, a plain line per finished blob otherwise, nothing with -q.
type progress struct {
	mu    sync.Mutex
	out   io.Writer
	quiet bool
	start time.Time

	bars    *mpb.Progress // nil when not on a terminal
	total   *mpb.Bar
	blobs   map[digest.Digest]*blobBar
	sumSize int64
	sumDone int64
}

type blobBar struct {
	bar    *mpb.Bar
	ev     store.ProgressEvent
	status string
	unpack string // unpacking or unpacked, which may overlap fetching
	final  bool
	// shown is label() for the bar's decorator, which runs on the bar's
	// own goroutine: it cannot take progress.mu, which Event holds while
	// it waits for that goroutine.
	shown atomic.Value
}

func newProgress(c *cli.Context, title string) *progress {
	// Progress is a diagnostic: it goes to stderr, so that $(casfs image
	// pull ...) captures only the result.
	p := &progress{out: c.App.ErrWriter, quiet: c.Bool("quiet"), start: time.Now(), blobs: map[digest.Digest]*blobBar{}}
	if f, ok := c.App.ErrWriter.(*os.File); ok && !p.quiet && barsFit(f) {
		p.bars = mpb.New(mpb.WithOutput(f), mpb.WithWidth(32), mpb.WithRefreshRate(150*time.Millisecond))
		p.total = p.bars.New(0, mpb.BarStyle(),
			mpb.PrependDecorators(decor.Name(title, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(counters(), decor.Any(p.rate), decor.Name(" "), decor.AverageETA(decor.ET_STYLE_MMSS)),
			mpb.BarPriority(1<<30))
	}
	return p
}

// barsFit reports whether f is a terminal that bars can be drawn on: a
// pseudo-terminal without a window size (script, some CI runners) gets
// lines, as a pipe does.
func barsFit(f *os.File) bool {
	if !term.IsTerminal(int(f.Fd())) {
		return false
	}
	w, _, err := term.GetSize(int(f.Fd()))
	return err == nil && w > 0
}

// counters shows "done / total" in the same units as the line output.
func counters() decor.Decorator {
	return decor.Any(func(s decor.Statistics) string {
		return humanSize(s.Current) + " / " + humanSize(s.Total)
	}, decor.WCSyncSpace)
}

// rate is the average transfer rate since the command started.
func (p *progress) rate(s decor.Statistics) string {
	secs := time.Since(p.start).Seconds()
	if secs <= 0 {
		return ""
	}
	return " " + humanSize(int64(float64(s.Current)/secs)) + "/s"
}

// Event records one progress event; safe for concurrent use.
func (p *progress) Event(ev store.ProgressEvent) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.blobs[ev.Digest]
	if !ok {
		b = &blobBar{}
		p.blobs[ev.Digest] = b
		p.sumSize += ev.Total
		if p.bars != nil {
			b.bar = p.bars.New(ev.Total, mpb.BarStyle(),
				mpb.PrependDecorators(decor.Name(shortDigest(ev.Digest), decor.WCSyncSpaceR), decor.Any(func(decor.Statistics) string { s, _ := b.shown.Load().(string); return s }, decor.WCSyncSpaceR)),
				mpb.AppendDecorators(counters(), decor.Name(" "), decor.AverageETA(decor.ET_STYLE_MMSS)))
			p.total.SetTotal(p.sumSize, false)
		}
	}
	if ev.Status == "unpacking" || ev.Status == "unpacked" {
		// Unpacking may overlap the download: it changes the blob's status
		// line, never its byte counts.
		b.unpack = ev.Status
		b.shown.Store(b.label())
		if p.bars == nil && ev.Status == "unpacked" {
			fmt.Fprintf(p.out, "%s unpacked %s\n", shortDigest(ev.Digest), humanSize(ev.Total))
		}
		return
	}
	p.sumDone += ev.Done - b.ev.Done
	b.ev, b.status = ev, ev.Status
	b.shown.Store(b.label())
	final := ev.Status == "done" || ev.Status == "exists" || ev.Status == "error"
	if p.bars != nil {
		b.bar.SetCurrent(ev.Done)
		p.total.SetCurrent(p.sumDone)
		if final && !b.final {
			b.bar.SetTotal(-1, true)
		}
	} else if final && !b.final && ev.Status != "error" {
		// A failed blob fails the command, whose one error line says why.
		fmt.Fprintf(p.out, "%s %s %s\n", shortDigest(ev.Digest), ev.Status, humanSize(ev.Total))
	}
	b.final = b.final || final
}

// label is what a blob's bar says it is doing: unpacking, once that has
// started, tells more than the fetch that may still feed it.
func (b *blobBar) label() string {
	if b.unpack != "" {
		return b.unpack
	}
	return b.status
}

// Finish closes the bars and prints the total line.
func (p *progress) Finish(err error) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	if p.bars != nil {
		for _, b := range p.blobs {
			if !b.final {
				b.bar.Abort(false)
			}
		}
		p.total.SetTotal(-1, true)
		p.mu.Unlock()
		p.bars.Wait()
		return
	}
	defer p.mu.Unlock()
	if err == nil {
		fmt.Fprintf(p.out, "total: %s in %s (%d blobs)\n", humanSize(p.sumDone), time.Since(p.start).Round(100*time.Millisecond), len(p.blobs))
	}
}

func shortDigest(d digest.Digest) string {
	if len(d.Encoded()) < 12 {
		return d.String()
	}
	return d.Algorithm().String() + ":" + d.Encoded()[:12]
}
