// Package faultproxy is a fault-injecting HTTP reverse proxy for tests: it
// listens on 127.0.0.1 in front of a real registry and, for requests whose
// path matches a rule, drops the connection part way through a body, holds
// the response, answers with an error status, or flips a byte of the body.
// Rules change while the proxy runs, and it remembers every request it saw
// (method, path, Range header, status), so that tests can assert what a
// client did about a fault, not just whether it finally succeeded.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Kind is what a rule does to a matching request.
type Kind int

const (
	// Pass forwards the request untouched (a rule that only counts).
	Pass Kind = iota
	// Drop forwards the request, sends the upstream's headers and the first
	// After bytes of its body, then closes the connection.
	Drop
	// Stall holds the request before anything is sent until the rule is
	// removed, the client gives up or the proxy closes; a request released
	// by removing the rule is then forwarded.
	Stall
	// StallBody sends the headers and the first After bytes of the body,
	// then holds like Stall before sending the rest.
	StallBody
	// Status answers with Fault.Status (and Retry-After when set) without
	// asking the upstream.
	Status
	// Corrupt forwards the response with the body byte at offset After
	// inverted, keeping the length.
	Corrupt
	// Trickle sends the headers and the first After bytes of the body, then
	// one byte per Fault.Every (default 1 s): a registry that never stalls
	// long enough for an idle timeout and never finishes either.
	Trickle
)

func (k Kind) String() string {
	switch k {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Stall:
		return "stall"
	case StallBody:
		return "stall-body"
	case Status:
		return "status"
	case Corrupt:
		return "corrupt"
	case Trickle:
		return "trickle"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Fault is what to do to requests that match a rule.
type Fault struct {
	Kind Kind
	// Method limits the rule to one method ("" for any).
	Method string
	// After is the body offset for Drop, StallBody and Corrupt.
	After int64
	// Every is the pace of a Trickle fault (default 1 s a byte).
	Every time.Duration
	// Status and RetryAfter are the answer of a Status fault.
	Status     int
	RetryAfter string
	// Times applies the fault to the next Times matching requests only;
	// later ones pass. 0 means every matching request.
	Times int
	// Wait, when set, delays a Status answer until it is closed (or the
	// client gives up), so that a test decides when a failure happens.
	Wait <-chan struct{}
	// OnHold, when set, is called as a Stall or StallBody starts holding,
	// so that a test knows the fault is in place without polling.
	OnHold func()
}

// Request is one request the proxy saw.
type Request struct {
	Method string
	Path   string
	Range  string // the Range header, "" when none
	Status int    // what the client was answered (0 when the connection was cut before headers)
	Fault  Kind   // Pass when no fault applied
}

type rule struct {
	pattern string
	re      *regexp.Regexp
	fault   Fault
	used    int
	release chan struct{} // closed when the rule is removed
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	// URL is "http://127.0.0.1:PORT"; Host is "127.0.0.1:PORT".
	URL, Host string

	upstream *url.URL
	rp       *httputil.ReverseProxy
	srv      *http.Server
	ln       net.Listener
	closed   chan struct{}
	served   chan struct{}

	mu    sync.Mutex
	rules []*rule
	log   []Request
}

// Start listens on a free loopback port and forwards to upstream
// (an http URL such as testenv.Registry.URL).
func Start(upstream string) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("faultproxy: upstream %q is not an http(s) URL", upstream)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		URL: "http://" + ln.Addr().String(), Host: ln.Addr().String(),
		upstream: u, ln: ln, closed: make(chan struct{}), served: make(chan struct{}),
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			// Keep the client's Host so that the registry's Location
			// headers point back through the proxy.
			r.Out.Host = r.In.Host
		},
		// Stream bodies as they come, so that a cut or a stall happens
		// where the rule says and not after buffering.
		FlushInterval: -1,
		// Cut and held bodies are the point here, not news.
		ErrorLog: log.New(io.Discard, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "faultproxy: upstream: "+err.Error(), http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve)}
	go func() {
		defer close(p.served)
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// Close releases every held request and stops the proxy.
func (p *Proxy) Close() error {
	select {
	case <-p.closed:
		return nil
	default:
	}
	close(p.closed)
	err := p.srv.Close()
	<-p.served
	return err
}

// Set adds a rule for request paths matching the regular expression
// pattern, replacing an earlier rule with the same pattern. Rules are tried
// in the order they were first set; the first that matches applies.
func (p *Proxy) Set(pattern string, f Fault) error {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return fmt.Errorf("faultproxy: pattern %q: %w", pattern, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	nr := &rule{pattern: pattern, re: re, fault: f, release: make(chan struct{})}
	for i, r := range p.rules {
		if r.pattern == pattern {
			close(r.release)
			p.rules[i] = nr
			return nil
		}
	}
	p.rules = append(p.rules, nr)
	return nil
}

// Clear removes the rule with this pattern, releasing requests it holds.
func (p *Proxy) Clear(pattern string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, r := range p.rules {
		if r.pattern == pattern {
			close(r.release)
			p.rules = append(p.rules[:i], p.rules[i+1:]...)
			return
		}
	}
}

// Reset removes every rule, releasing held requests, and keeps the log.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.rules {
		close(r.release)
	}
	p.rules = nil
}

// Requests returns the requests seen so far, oldest first.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.log...)
}

// Count is how many requests had a path matching the regular expression
// pattern (an invalid pattern counts nothing).
func (p *Proxy) Count(pattern string) int {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return 0
	}
	n := 0
	for _, r := range p.Requests() {
		if re.MatchString(r.Path) {
			n++
		}
	}
	return n
}

// Blob is a pattern matching the blob endpoint of d in any repository.
func Blob(d digest.Digest) string {
	return `^/v2/.+/blobs/` + regexp.QuoteMeta(d.String()) + `$`
}

// Manifest is a pattern matching the manifest endpoint of ref (a tag or a
// digest) in any repository.
func Manifest(ref string) string {
	return `^/v2/.+/manifests/` + regexp.QuoteMeta(ref) + `$`
}

// match picks the rule for r and counts its use; nil when none applies.
func (p *Proxy) match(r *http.Request) (Fault, <-chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ru := range p.rules {
		if !ru.re.MatchString(r.URL.Path) || (ru.fault.Method != "" && ru.fault.Method != r.Method) {
			continue
		}
		if ru.fault.Times > 0 && ru.used >= ru.fault.Times {
			continue
		}
		ru.used++
		return ru.fault, ru.release, true
	}
	return Fault{}, nil, false
}

func (p *Proxy) record(req Request) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, req)
	return len(p.log) - 1
}

func (p *Proxy) setStatus(i, status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.log[i].Status == 0 {
		p.log[i].Status = status
	}
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	f, release, ok := p.match(r)
	if !ok {
		f = Fault{Kind: Pass}
	}
	i := p.record(Request{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), Fault: f.Kind})
	fw := &faultWriter{w: w, f: f, release: release, ctx: r.Context(), closed: p.closed,
		onHeader: func(status int) { p.setStatus(i, status) }}
	switch f.Kind {
	case Status:
		if f.Wait != nil && !p.hold(r.Context(), f.Wait) {
			panic(http.ErrAbortHandler)
		}
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		fw.WriteHeader(f.Status)
		fmt.Fprintf(w, `{"errors":[{"code":"UNAVAILABLE","message":"faultproxy: injected %d","detail":null}]}`+"\n", f.Status)
		return
	case Stall:
		if f.OnHold != nil {
			f.OnHold()
		}
		if !p.hold(r.Context(), release) {
			// Cut the connection: an empty 200 would look like an answer.
			panic(http.ErrAbortHandler)
		}
	}
	p.rp.ServeHTTP(fw, r)
}

// hold waits until the rule is released (true) or the client or the proxy
// gives up (false).
func (p *Proxy) hold(ctx context.Context, release <-chan struct{}) bool {
	select {
	case <-release:
		return true
	case <-ctx.Done():
	case <-p.closed:
	}
	return false
}

// faultWriter applies Drop, StallBody and Corrupt to the body the reverse
// proxy copies from the upstream.
type faultWriter struct {
	w        http.ResponseWriter
	f        Fault
	release  <-chan struct{}
	ctx      context.Context
	closed   <-chan struct{}
	onHeader func(int)
	off      int64
	held     bool
}

func (fw *faultWriter) Header() http.Header { return fw.w.Header() }

func (fw *faultWriter) WriteHeader(status int) {
	fw.onHeader(status)
	fw.w.WriteHeader(status)
}

func (fw *faultWriter) Flush() {
	if fl, ok := fw.w.(http.Flusher); ok {
		fl.Flush()
	}
}

func (fw *faultWriter) Write(b []byte) (int, error) {
	fw.onHeader(http.StatusOK)
	switch fw.f.Kind {
	case Drop:
		if fw.off+int64(len(b)) > fw.f.After {
			keep := max(fw.f.After-fw.off, 0)
			fw.w.Write(b[:keep])
			fw.Flush()
			// Aborting the handler makes net/http close the connection
			// without finishing the response: the client sees a short body.
			panic(http.ErrAbortHandler)
		}
	case StallBody:
		if !fw.held && fw.off+int64(len(b)) > fw.f.After {
			keep, n, err := fw.writeBeforeAfter(b)
			if err != nil {
				return n, err
			}
			fw.held = true
			if fw.f.OnHold != nil {
				fw.f.OnHold()
			}
			if err := waitOn(fw, fw.release); err != nil {
				return n, err
			}
			m, err := fw.w.Write(b[keep:])
			fw.off += int64(m)
			return n + m, err
		}
	case Trickle:
		if fw.off+int64(len(b)) > fw.f.After {
			return fw.trickle(b)
		}
	case Corrupt:
		if at := fw.f.After - fw.off; at >= 0 && at < int64(len(b)) {
			c := append([]byte(nil), b...)
			c[at] ^= 0xff
			n, err := fw.w.Write(c)
			fw.off += int64(n)
			return n, err
		}
	}
	n, err := fw.w.Write(b)
	fw.off += int64(n)
	return n, err
}

// writeBeforeAfter writes and flushes the part of b before body offset
// After, returning its length and what was written.
func (fw *faultWriter) writeBeforeAfter(b []byte) (keep int64, n int, err error) {
	keep = max(fw.f.After-fw.off, 0)
	n, err = fw.w.Write(b[:keep])
	fw.off += int64(n)
	if err == nil {
		fw.Flush()
	}
	return keep, n, err
}

// waitOn blocks until c delivers (or is closed), or fails when the client
// or the proxy goes.
func waitOn[T any](fw *faultWriter, c <-chan T) error {
	select {
	case <-c:
		return nil
	case <-fw.ctx.Done():
		return fw.ctx.Err()
	case <-fw.closed:
		return errors.New("faultproxy: closed")
	}
}

// trickle writes b, the bytes past After one per Fault.Every.
func (fw *faultWriter) trickle(b []byte) (int, error) {
	keep, n, err := fw.writeBeforeAfter(b)
	if err != nil {
		return n, err
	}
	every := fw.f.Every
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for _, c := range b[keep:] {
		if err := waitOn(fw, tick.C); err != nil {
			return n, err
		}
		m, err := fw.w.Write([]byte{c})
		n += m
		fw.off += int64(m)
		if err != nil {
			return n, err
		}
		fw.Flush()
	}
	return n, nil
}

// String describes the rules, for test failure messages.
func (p *Proxy) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for _, r := range p.rules {
		parts = append(parts, fmt.Sprintf("%s: %s (used %d)", r.pattern, r.fault.Kind, r.used))
	}
	return "faultproxy " + p.URL + " [" + strings.Join(parts, "; ") + "]"
}
