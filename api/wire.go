package api

import (
	"encoding/json"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/store"
)

// Request and response bodies. They are exported so that other Go programs
// (and the route documentation) can name them; the command line never needs
// them because Client speaks store.API.

// resolveResponse answers GET /v1/resolve.
type resolveResponse struct {
	Digest digest.Digest `json:"digest"`
}

// ingestResponse answers PUT /v1/ingests/{ref}.
type ingestResponse struct {
	Info store.ContentInfo `json:"info"`
	// ResumedAt is the offset the ingest resumed at; absent for a fresh one.
	ResumedAt *int64 `json:"resumedAt,omitempty"`
	// Restarted is set when the stored bytes of the ingest were not the
	// input's: Stored were found, Kept of them matched.
	Restarted *ingestRestart `json:"restarted,omitempty"`
}

// ingestRestart is ingestResponse.Restarted.
type ingestRestart struct {
	Stored int64 `json:"stored"`
	Kept   int64 `json:"kept"`
}

// verifyRequest is the body of POST /v1/content/verify; no digests means all.
type verifyRequest struct {
	Digests []digest.Digest `json:"digests"`
}

// verifyResponse answers POST /v1/content/verify.
type verifyResponse struct {
	Problems []store.Problem `json:"problems"`
}

// labelsRequest is the body of PATCH /v1/content/{digest}/labels.
type labelsRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// pullRequest is the body of POST /v1/images/pull and POST /v1/content/fetch.
type pullRequest struct {
	Ref     string            `json:"ref"`
	Options store.PullOptions `json:"options"`
}

// pushRequest is the body of POST /v1/images/push.
type pushRequest struct {
	Ref     string            `json:"ref"`
	Remote  string            `json:"remote,omitempty"`
	Options store.PushOptions `json:"options"`
}

// tagRequest is the body of POST /v1/images/tag.
type tagRequest struct {
	Source  string   `json:"source"`
	Targets []string `json:"targets"`
}

// imageLabelsRequest is the body of POST /v1/images/labels.
type imageLabelsRequest struct {
	Name   string            `json:"name"`
	Set    map[string]string `json:"set,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// convertRequest is the body of POST /v1/images/convert.
type convertRequest struct {
	Source  string               `json:"source"`
	Target  string               `json:"target"`
	Options store.ConvertOptions `json:"options"`
}

// streamLine is one line of a progress stream (application/x-ndjson):
// any number of {"event":...} lines, then exactly one {"result":...} or
// {"error":...,"kind":...} line.
type streamLine struct {
	Event  *store.ProgressEvent `json:"event,omitempty"`
	Result json.RawMessage      `json:"result,omitempty"`
	*ErrorBody
}
