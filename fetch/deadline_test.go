package fetch

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/casfs/casfs/errdefs"
)

// trickle serves size bytes: the first fast bytes at once, then one byte
// per every, until the client goes away.
func trickle(t *testing.T, size, fast int, every time.Duration) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(make([]byte, fast))
		w.(http.Flusher).Flush()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := fast; i < size; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
			if _, err := w.Write([]byte{0}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A body that keeps sending, but less than ProgressBytes per ProgressTimeout,
// fails with the progress deadline, which names itself and is transient.
func TestProgressDeadlineFailsATrickle(t *testing.T) {
	t.Parallel()
	srv := trickle(t, 1<<20, 100, 10*time.Millisecond)
	resp := getWithDeadlines(t, srv.URL, ReadDeadlines{ProgressTimeout: 300 * time.Millisecond, ProgressBytes: 4 << 10})
	n, err := io.Copy(io.Discard, resp.Body)
	if !isSlowRead(err) || !errors.Is(err, errdefs.ErrUnavailable) || !isTransient(err) ||
		!strings.Contains(err.Error(), "less than 4 KiB in 300ms") {
		t.Fatalf("read of a trickle: %d bytes, %v", n, err)
	}
	if n >= 4<<10 {
		t.Fatalf("read %d bytes before failing", n)
	}
}

// getWithDeadlines GETs url through a client with deadlines d; the body is
// closed when the test ends.
func getWithDeadlines(t *testing.T, url string, d ReadDeadlines) *http.Response {
	t.Helper()
	resp, err := newHTTPClient(nil, time.Second, time.Second, d).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// Time the consumer spends not reading does not count against the
// registry, and a body that keeps up never fails.
func TestProgressDeadlineIgnoresBackpressure(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 256<<10))
	}))
	t.Cleanup(srv.Close)
	resp := getWithDeadlines(t, srv.URL, ReadDeadlines{ProgressTimeout: 100 * time.Millisecond, ProgressBytes: 1 << 10})
	buf := make([]byte, 32<<10)
	total := 0
	pause := time.NewTimer(0)
	for i := 0; ; i++ {
		if i == 2 {
			// A consumer busy for three progress windows.
			pause.Reset(300 * time.Millisecond)
			<-pause.C
		}
		n, err := resp.Body.Read(buf)
		total += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", total, err)
		}
	}
	if total != 256<<10 {
		t.Fatalf("read %d bytes", total)
	}
}

func TestReadDeadlinesFromHostsToml(t *testing.T) {
	dir := t.TempDir()
	writeHostsToml(t, dir, "reg.example", `
server = "https://reg.example"
progress_timeout = "5s"
progress_bytes = 2048
manifest_timeout = "7s"

[host."https://mirror.example"]
  capabilities = ["pull"]
  manifest_timeout = "3s"
`)
	eps, err := loadEndpoints(dir, "reg.example", hostsOptions{Deadlines: ReadDeadlines{ProgressTimeout: 9 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	want := []ReadDeadlines{
		{ProgressTimeout: 9 * time.Second, ProgressBytes: defaultProgressBytes, ManifestTimeout: 3 * time.Second},
		{ProgressTimeout: 9 * time.Second, ProgressBytes: 2048, ManifestTimeout: 7 * time.Second},
	}
	if len(eps) != 2 || eps[0].Deadlines != want[0] || eps[1].Deadlines != want[1] {
		t.Fatalf("deadlines: %+v, want %+v", eps, want)
	}
	writeHostsToml(t, dir, "bad.example", `progress_timeout = "soon"`)
	if _, err := loadEndpoints(dir, "bad.example", hostsOptions{}); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "progress_timeout") {
		t.Fatalf("bad progress_timeout: %v", err)
	}
}
