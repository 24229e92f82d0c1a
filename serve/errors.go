package serve

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// regError is one error in the distribution spec's JSON form.
type regError struct {
	status  int
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *regError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, msg string) *regError {
	return &regError{status: status, Code: code, Message: msg}
}

var (
	errNameUnknown     = errorf(http.StatusNotFound, "NAME_UNKNOWN", "repository name not known to registry")
	errManifestUnknown = errorf(http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
	errBlobUnknown     = errorf(http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
	errNameInvalid     = errorf(http.StatusBadRequest, "NAME_INVALID", "invalid repository name")
	errDigestInvalid   = errorf(http.StatusBadRequest, "DIGEST_INVALID", "provided digest did not match uploaded content")
	errPaginationN     = errorf(http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", "invalid number of results requested")
	errUnsupported     = errorf(http.StatusMethodNotAllowed, "UNSUPPORTED", "the operation is unsupported: this registry is read only")
	errNotFound        = errorf(http.StatusNotFound, "NOT_FOUND", "no such route")
	errTooMany         = errorf(http.StatusTooManyRequests, "TOO_MANY_REQUESTS", "too many requests")
)

// writeError sends err in the spec's form; a HEAD request gets the status
// only (it has no body).
func writeError(w http.ResponseWriter, r *http.Request, err *regError) {
	b, _ := json.Marshal(struct {
		Errors []*regError `json:"errors"`
	}{[]*regError{err}})
	h := w.Header()
	h.Del("Docker-Content-Digest") // set for the body the error replaces
	h.Del("ETag")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if err.status == http.StatusMethodNotAllowed {
		h.Set("Allow", "GET, HEAD")
	}
	w.WriteHeader(err.status)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
}
