package testenv

import (
	"bufio"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Request is one line of the registry's access log.
type Request struct {
	Method string
	URI    string // path and query as the client sent them
	Status int
}

// accessLine matches the combined log format the registry writes for every
// request: `HOST - USER [TIME] "METHOD URI PROTO" STATUS SIZE ...`.
var accessLine = regexp.MustCompile(`^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) `)

// Requests returns the requests the registry has logged so far, across
// restarts, oldest first.
//
// The registry writes a request's line when its handler returns, which is
// before the client can read the end of a response the server buffers
// (headers-only answers, manifests, errors: anything under a few KiB). For a
// large blob GET, read the body to EOF first; even then the line can in rare
// cases trail the last byte, so prefer counting small requests (HEAD,
// manifests, uploads) in assertions.
func (r *Registry) Requests() []Request {
	f, err := os.Open(r.LogPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []Request
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		status, _ := strconv.Atoi(m[3])
		out = append(out, Request{Method: m[1], URI: m[2], Status: status})
	}
	return out
}

// RequestCount counts logged requests with the given method ("" for any)
// whose URI contains substr.
func (r *Registry) RequestCount(method, substr string) int {
	n := 0
	for _, q := range r.Requests() {
		if (method == "" || q.Method == method) && strings.Contains(q.URI, substr) {
			n++
		}
	}
	return n
}
