package daemon

import (
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/casfs/casfs/fusefs"
)

// Memory is what GET /debug/memory on the daemon's socket answers: the
// filesystem's figures and the process's resident set size.
type Memory struct {
	fusefs.Stats
	// RSS is the daemon's resident set size in bytes (VmRSS).
	RSS int64 `json:"rss"`
}

// debugHandler serves /debug/memory: it collects garbage first, so the
// heap figures are what is live.
func debugHandler(fsys *fusefs.FS) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/memory", func(w http.ResponseWriter, r *http.Request) {
		m := Memory{RSS: selfRSS()}
		if fsys != nil { // serving a registry without a mount
			m.Stats = fsys.Stats()
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(m)
	})
	return mux
}

// selfRSS reads VmRSS from /proc/self/status; 0 when it cannot.
func selfRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
