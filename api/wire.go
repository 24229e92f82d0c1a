package api

import (
	"encoding/json"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/store"
)

// Request and response bodies. They are exported so that other Go programs
// (and the route documentation) can name them; the command line never needs
// them because Client speaks store.API.

// ResolveResponse answers GET /v1/resolve.
type ResolveResponse struct {
	Digest digest.Digest `json:"digest"`
}

// IngestResponse answers PUT /v1/ingests/{ref}.
type IngestResponse struct {
	Info store.ContentInfo `json:"info"`
	// ResumedAt is the offset the ingest resumed at; absent for a fresh one.
	ResumedAt *int64 `json:"resumedAt,omitempty"`
	// Restarted is set when the stored bytes of the ingest were not the
	// input's: Stored were found, Kept of them matched.
	Restarted *IngestRestart `json:"restarted,omitempty"`
}

// IngestRestart is IngestResponse.Restarted.
type IngestRestart struct {
	Stored int64 `json:"stored"`
	Kept   int64 `json:"kept"`
}

// VerifyRequest is the body of POST /v1/content/verify; no digests means all.
type VerifyRequest struct {
	Digests []digest.Digest `json:"digests"`
}

// VerifyResponse answers POST /v1/content/verify.
type VerifyResponse struct {
	Problems []store.Problem `json:"problems"`
}

// LabelsRequest is the body of PATCH /v1/content/{digest}/labels.
type LabelsRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// PullRequest is the body of POST /v1/images/pull and POST /v1/content/fetch.
type PullRequest struct {
	Ref     string            `json:"ref"`
	Options store.PullOptions `json:"options"`
}

// PushRequest is the body of POST /v1/images/push.
type PushRequest struct {
	Ref     string            `json:"ref"`
	Remote  string            `json:"remote,omitempty"`
	Options store.PushOptions `json:"options"`
}

// TagRequest is the body of POST /v1/images/tag.
type TagRequest struct {
	Source  string   `json:"source"`
	Targets []string `json:"targets"`
}

// ImageLabelsRequest is the body of POST /v1/images/labels.
type ImageLabelsRequest struct {
	Name   string            `json:"name"`
	Set    map[string]string `json:"set,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// ConvertRequest is the body of POST /v1/images/convert.
type ConvertRequest struct {
	Source  string               `json:"source"`
	Target  string               `json:"target"`
	Options store.ConvertOptions `json:"options"`
}

// StreamLine is one line of a progress stream (application/x-ndjson):
// any number of {"event":...} lines, then exactly one {"result":...} or
// {"error":...,"kind":...} line.
type StreamLine struct {
	Event  *store.ProgressEvent `json:"event,omitempty"`
	Result json.RawMessage      `json:"result,omitempty"`
	*ErrorBody
}
