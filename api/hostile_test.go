package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/casfs/casfs/store"
)

// TestHostileRequests sends what the Client never would and checks that
// every answer is a JSON error with the right status and kind.
func TestHostileRequests(t *testing.T) {
	ts := serve(t, newFakeStore())
	hc := rawClient(t, ts.sock)
	big := `{"digests":["` + strings.Repeat("a", defaultMaxJSONBody) + `"]}`
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		kind, contains, allow    string
	}{
		{"oversized JSON body", "POST", "/v1/content/verify", big, 413, "invalid_argument", "larger than 1048576 bytes", ""},
		{"malformed JSON", "POST", "/v1/content/verify", `{"digests": [`, 400, "invalid_argument", "malformed JSON", ""},
		{"wrong JSON type", "POST", "/v1/images/tag", `{"source": 7}`, 400, "invalid_argument", "malformed JSON", ""},
		{"unknown JSON field", "POST", "/v1/images/pull", `{"ref":"x","options":{"insecure":true}}`, 400, "invalid_argument", "insecure", ""},
		{"two JSON values", "PATCH", "/v1/content/sha256:abc/labels", `{} {}`, 400, "invalid_argument", "more than one", ""},
		{"unknown route", "GET", "/v1/nope", "", 404, "not_implemented", "no route GET /v1/nope", ""},
		{"root", "GET", "/", "", 404, "not_implemented", "no route", ""},
		{"unknown version", "GET", "/v2/content", "", 404, "not_implemented", "no route", ""},
		{"trailing slash", "GET", "/v1/content/sha256:abc/", "", 404, "not_implemented", "no route", ""},
		{"wrong method on list", "DELETE", "/v1/content", "", 405, "invalid_argument", "DELETE is not allowed", "GET"},
		{"wrong method on verify", "GET", "/v1/content/verify", "", 405, "invalid_argument", "GET is not allowed", "POST"},
		{"wrong method on blob", "POST", "/v1/content/sha256:abc", "", 405, "invalid_argument", "not allowed", "DELETE, GET"},
		{"size not a number", "PUT", "/v1/ingests/x?size=lots", "data", 400, "invalid_argument", `size="lots"`, ""},
		{"resolve without digest", "GET", "/v1/resolve", "", 400, "invalid_argument", `"digest"`, ""},
		{"image without name", "GET", "/v1/images/by-name", "", 400, "invalid_argument", `"name"`, ""},
		{"escaped traversal", "GET", "/v1/content/..%2F..%2Fetc%2Fpasswd", "", 404, "not_found", "../../etc/passwd", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, "http://casfs"+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Errorf("status %s, want %d (body %s)", resp.Status, tc.status, data)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var body ErrorBody
			if err := json.Unmarshal(data, &body); err != nil {
				t.Fatalf("body is not a JSON error: %s", data)
			}
			if body.Kind != tc.kind || !strings.Contains(body.Error, tc.contains) {
				t.Errorf("error %+v, want kind %s mentioning %q", body, tc.kind, tc.contains)
			}
			if tc.allow != "" && resp.Header.Get("Allow") != tc.allow {
				t.Errorf("Allow %q, want %q", resp.Header.Get("Allow"), tc.allow)
			}
		})
	}
}

// TestCurlShapes checks the documented routes answer as doc.go says.
func TestCurlShapes(t *testing.T) {
	f := newFakeStore()
	f.pull = func(ctx context.Context, ref string, opts store.PullOptions) (store.ImageInfo, error) {
		opts.Progress(store.ProgressEvent{Status: "fetching", Total: 3, Done: 1})
		return store.ImageInfo{Name: ref}, nil
	}
	ts := serve(t, f)
	hc := rawClient(t, ts.sock)
	resp, err := hc.Post("http://casfs/v1/images/pull", "application/json", strings.NewReader(`{"ref":"lab/x:1"}`))
	if err != nil {
		t.Fatal(err)
	}
	stream, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantStream := `{"event":{"digest":"","total":3,"done":1,"status":"fetching"}}` + "\n" +
		`{"result":{"name":"lab/x:1","target":{"mediaType":"","digest":"","size":0},"size":0,"createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z"}}` + "\n"
	if resp.Header.Get("Content-Type") != "application/x-ndjson" || string(stream) != wantStream {
		t.Errorf("pull stream %s:\n%s\nwant\n%s", resp.Header.Get("Content-Type"), stream, wantStream)
	}
	req, _ := http.NewRequest("PUT", "http://casfs/v1/ingests/by-curl", strings.NewReader("hello\n"))
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ing ingestResponse
	json.NewDecoder(resp.Body).Decode(&ing)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || ing.Info.Size != 6 || ing.ResumedAt != nil {
		t.Fatalf("PUT /v1/ingests/by-curl: %s %+v", resp.Status, ing)
	}
	resp, err = hc.Get("http://casfs/v1/content/" + ing.Info.Digest.String() + "/data")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(data, []byte("hello\n")) || resp.Trailer.Get(errorTrailer) != "" {
		t.Errorf("GET data: %s %q trailer %q", resp.Status, data, resp.Trailer.Get(errorTrailer))
	}
	resp, err = hc.Post("http://casfs/v1/content/verify", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var v verifyResponse
	err = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || len(v.Problems) != 0 {
		t.Errorf("POST verify with no body: %s %v %+v", resp.Status, err, v)
	}
	resp, err = hc.Get("http://casfs/v1/ping")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("ping: %s", resp.Status)
	}
}
