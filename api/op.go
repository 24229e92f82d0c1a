package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// The socket API is one table of operations. Each operation is a package
// variable made by jsonOp, dataOutOp, dataInOp or progressOp: its method and
// path pattern, how its request travels and how its answer does. The Server
// routes every registered operation and the Client calls the same values, so
// a path, a status or an encoding is written once; doc.go's route list is
// generated from the table (go generate ./api) and TestDocRoutes fails when
// the two differ.
//
// A request type travels as the JSON body, unless it implements requestWire
// (the client side: path wildcards, query, body) and requestBinder (the
// server side), which say where its fields go. none is no request or no
// answer (204).

// route is one entry of the table.
type route struct {
	method, pattern string
	// status is a JSON answer's status: 0 means 200, or 204 when the
	// operation answers nothing.
	status int
	// docPath is the path as doc.go shows it (with its query); "" means
	// the pattern.
	docPath string
	// doc is doc.go's description: the store method, body and answer.
	doc   string
	serve func(srv *Server, w http.ResponseWriter, r *http.Request) error
}

//go:generate go test -run TestDocRoutes -update .

// table is every operation, in declaration order.
var table []route

func register(rt route) route {
	table = append(table, rt)
	return rt
}

// none is the request of an operation that takes nothing and the answer of
// one that answers nothing.
type none struct{}

func isNone[T any]() bool {
	var v T
	_, ok := any(v).(none)
	return ok
}

// wire is where a request's parts go: values for the pattern's wildcards,
// the query, and a JSON body.
type wire struct {
	path  map[string]string
	query url.Values
	json  any
}

// requestWire is implemented by requests that do not travel as just their
// JSON encoding. It may refuse a request that has no way to travel.
type requestWire interface {
	wire() (wire, error)
}

// requestBinder is requestWire's server side: it fills the request from the
// path, query and body.
type requestBinder interface {
	bind(srv *Server, w http.ResponseWriter, r *http.Request) error
}

// bindRequest reads an operation's request on the server.
func bindRequest[Req any](srv *Server, w http.ResponseWriter, r *http.Request) (Req, error) {
	var req Req
	if b, ok := any(&req).(requestBinder); ok {
		return req, b.bind(srv, w, r)
	}
	if isNone[Req]() {
		return req, nil
	}
	return req, srv.decodeJSON(w, r, &req)
}

// clientRequest builds an operation's request on the client.
func clientRequest[Req any](rt route, req Req) (request, error) {
	out := request{method: rt.method, path: rt.pattern}
	w := wire{json: req}
	if rw, ok := any(req).(requestWire); ok {
		var err error
		if w, err = rw.wire(); err != nil {
			return request{}, err
		}
	} else if isNone[Req]() {
		w.json = nil
	}
	out.path, out.query, out.json = expand(rt.pattern, w.path), w.query, w.json
	return out, nil
}

// expand fills a pattern's wildcards ({name} and {name...}) with escaped
// path segments.
func expand(pattern string, vals map[string]string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(pattern, '{')
		if i < 0 {
			b.WriteString(pattern)
			return b.String()
		}
		j := strings.IndexByte(pattern[i:], '}')
		if j < 0 {
			panic("api: unterminated wildcard in " + pattern)
		}
		b.WriteString(pattern[:i])
		b.WriteString(segment(vals[strings.TrimSuffix(pattern[i+1:i+j], "...")]))
		pattern = pattern[i+j+1:]
	}
}

// jsonCall is an operation answered with JSON (or 204).
type jsonCall[Req, Resp any] struct{ route }

// jsonOp registers an operation whose answer is JSON, or 204 when Resp is
// none.
func jsonOp[Req, Resp any](rt route, run func(context.Context, store.API, Req) (Resp, error)) jsonCall[Req, Resp] {
	if rt.status == 0 {
		rt.status = http.StatusOK
		if isNone[Resp]() {
			rt.status = http.StatusNoContent
		}
	}
	rt.serve = func(srv *Server, w http.ResponseWriter, r *http.Request) error {
		req, err := bindRequest[Req](srv, w, r)
		if err != nil {
			return err
		}
		out, err := run(r.Context(), srv.store, req)
		if err != nil {
			return err
		}
		if isNone[Resp]() {
			w.WriteHeader(rt.status)
			return nil
		}
		writeJSON(w, rt.status, out)
		return nil
	}
	return jsonCall[Req, Resp]{register(rt)}
}

func (o jsonCall[Req, Resp]) call(ctx context.Context, c *Client, req Req) (Resp, error) {
	var out Resp
	hr, err := clientRequest(o.route, req)
	if err != nil {
		return out, err
	}
	if isNone[Resp]() {
		return out, c.call(ctx, hr, nil)
	}
	return out, c.call(ctx, hr, &out)
}

// dataOutCall is an operation answered with a byte stream.
type dataOutCall[Req any] struct{ route }

// dataOutOp registers an operation whose answer is a byte stream of
// contentType (see dataWriter for how a late failure travels).
func dataOutOp[Req any](rt route, contentType string, run func(context.Context, store.API, Req, io.Writer) error) dataOutCall[Req] {
	rt.serve = func(srv *Server, w http.ResponseWriter, r *http.Request) error {
		req, err := bindRequest[Req](srv, w, r)
		if err != nil {
			return err
		}
		dw := &dataWriter{w: w, contentType: contentType}
		return dw.finish(run(r.Context(), srv.store, req, dw))
	}
	return dataOutCall[Req]{register(rt)}
}

func (o dataOutCall[Req]) call(ctx context.Context, c *Client, req Req, w io.Writer) error {
	hr, err := clientRequest(o.route, req)
	if err != nil {
		return err
	}
	return c.stream(ctx, hr, w)
}

// dataInCall is an operation whose request body is a byte stream.
type dataInCall[Req, Resp any] struct{ route }

// dataInOp registers an operation that streams the request body into the
// store; Req travels in the path and query and Resp as JSON.
func dataInOp[Req, Resp any](rt route, run func(context.Context, store.API, Req, io.Reader) (Resp, error)) dataInCall[Req, Resp] {
	if rt.status == 0 {
		rt.status = http.StatusOK
	}
	rt.serve = func(srv *Server, w http.ResponseWriter, r *http.Request) error {
		req, err := bindRequest[Req](srv, w, r)
		if err != nil {
			return err
		}
		out, err := run(r.Context(), srv.store, req, r.Body)
		if err != nil {
			return err
		}
		writeJSON(w, rt.status, out)
		return nil
	}
	return dataInCall[Req, Resp]{register(rt)}
}

func (o dataInCall[Req, Resp]) call(ctx context.Context, c *Client, req Req, body io.Reader) (Resp, error) {
	var out Resp
	hr, err := clientRequest(o.route, req)
	if err != nil {
		return out, err
	}
	if hr.json != nil {
		panic(fmt.Sprintf("api: %s %s streams its body and cannot carry JSON too", o.method, o.pattern))
	}
	hr.body = body
	return out, c.call(ctx, hr, &out)
}

// progressCall is an operation answered with an NDJSON progress stream.
type progressCall[Req, Resp any] struct{ route }

// progressOp registers an operation that reports progress while it runs:
// events, then its result, as NDJSON lines (see progressStream).
func progressOp[Req, Resp any](rt route, run func(context.Context, store.API, Req, store.ProgressFunc) (Resp, error)) progressCall[Req, Resp] {
	rt.serve = func(srv *Server, w http.ResponseWriter, r *http.Request) error {
		req, err := bindRequest[Req](srv, w, r)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		ps := newProgressStream(w, cancel)
		out, err := run(ctx, srv.store, req, ps.Event)
		return ps.finish(out, err)
	}
	return progressCall[Req, Resp]{register(rt)}
}

func (o progressCall[Req, Resp]) call(ctx context.Context, c *Client, req Req, fn store.ProgressFunc) (Resp, error) {
	var out Resp
	hr, err := clientRequest(o.route, req)
	if err != nil {
		return out, err
	}
	return out, c.progress(ctx, hr, fn, &out)
}

// nonEmpty answers an empty list as [] rather than null.
func nonEmpty[T any](s []T, err error) ([]T, error) {
	if s == nil && err == nil {
		s = []T{}
	}
	return s, err
}

// errEmptyDigest refuses a blob digest that has no path segment to travel in.
func errEmptyDigest() error {
	return fmt.Errorf("blob digest is empty: %w", errdefs.ErrInvalidArgument)
}
