package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// servedNode is one `casfs serve` daemon with its own root and port.
type servedNode struct {
	root, host string
	pid        int
	stop       func()
}

func freeHost() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

func startServeNode(e *env, root string, args ...string) (*servedNode, error) {
	host, err := freeHost()
	if err != nil {
		return nil, err
	}
	os.MkdirAll(root, 0o755)
	logPath := root + ".log"
	cmd, done, err := startDaemon(logPath, e.casfs, append([]string{"--root", root, "serve", "--addr", host}, args...)...)
	if err != nil {
		return nil, err
	}
	n := &servedNode{root: root, host: host, pid: cmd.Process.Pid}
	n.stop = func() {
		if !exited(done) {
			stopGroup(cmd, done, 15*time.Second)
		}
	}
	atExit(n.stop)
	err = waitFor(30*time.Second, "casfs serve", func() bool {
		if exited(done) {
			return true
		}
		resp, err := http.Get("http://" + host + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err == nil && exited(done) {
		err = fmt.Errorf("casfs serve exited: %s", tail(logPath))
	}
	if err != nil {
		n.stop()
		return nil, err
	}
	return n, nil
}

// getBlob reads one blob of size bytes over HTTP into nothing. It reads in 1 MiB steps, straight from the connection, so the client is
// not what limits a fast server (io.Discard's ReadFrom reads 8 KiB at a
// time).
func getBlob(client *http.Client, u string, size int64) error {
	resp, err := client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := resp.Body.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("GET %s: %w", u, err)
		}
	}
	if n != size {
		return fmt.Errorf("GET %s: %d bytes, want %d", u, n, size)
	}
	return nil
}

// blobServer is one side of the served-blob comparison: where it serves
// the blob, the file it serves it from, and its process.
type blobServer struct {
	url, file string
	pid       int
}

// blobReads is one side's result: the time of each read, the best of
// them, and the CPU time its process spent per read, on average.
type blobReads struct {
	times     []time.Duration
	best, cpu time.Duration
}

// bestReads reads a blob of size bytes from each server runs times,
// alternating between them so that load on the machine hits each side
// alike. Before every timed read it reads the server's file (the machine
// is shared, and anything on it may drop the page cache: warm means warm
// at the moment of the read) and writes dirty pages back (sync).
func bestReads(client *http.Client, sides []blobServer, size int64, runs int) ([]blobReads, error) {
	out := make([]blobReads, len(sides))
	for i := 0; i < runs; i++ {
		for j, side := range sides {
			if err := readFile(side.file); err != nil {
				return nil, err
			}
			syscall.Sync()
			cpu0, err := cpuTime(side.pid)
			if err != nil {
				return nil, err
			}
			start := time.Now()
			err = getBlob(client, side.url, size)
			d := time.Since(start)
			if err != nil {
				return nil, err
			}
			cpu1, err := cpuTime(side.pid)
			if err != nil {
				return nil, err
			}
			out[j].cpu += (cpu1 - cpu0) / time.Duration(runs)
			out[j].times = append(out[j].times, d)
			if out[j].best == 0 || d < out[j].best {
				out[j].best = d
			}
		}
	}
	return out, nil
}

// readFile reads a file into nothing, to bring it into the page cache.
func readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, make([]byte, 1<<20))
	return err
}

// cpuTime is the user and system CPU time a process has used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is the first, utime the 12th, stime the 13th.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

// pairedRatio is the median over rounds of a's time over b's: reads next
// to each other in time see about the same load, so on a busy machine this
// says more than the ratio of two best times.
func pairedRatio(a, b blobReads) float64 {
	r := make([]float64, len(a.times))
	for i := range r {
		r[i] = a.times[i].Seconds() / b.times[i].Seconds()
	}
	sort.Float64s(r)
	if n := len(r); n%2 == 0 {
		return (r[n/2-1] + r[n/2]) / 2
	}
	return r[len(r)/2]
}

func rate(n int64, d time.Duration) string {
	return fmt.Sprintf("%.0f MiB/s", float64(n)/(1<<20)/d.Seconds())
}

// loadAvg is the one-minute load average, to quote next to a figure.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// serveRuns is how many timed reads of the 1 GiB blob each side gets.
const serveRuns = 7

// benchServe: one casfs node serving the 1 GiB layer against
// docker-registry serving the same blob; 16 concurrent clients of it with
// the daemon's peak RSS; and a fleet of 8 nodes mirroring each other.
func benchServe(e *env) ([]Row, error) {
	set, err := e.loadImages()
	if err != nil {
		return nil, err
	}
	root := filepath.Join(e.work, "serve-a")
	defer os.RemoveAll(root)
	if _, err := runTimed(10*time.Minute, e.casfs, "--root", root, "image", "pull", "--plain-http", "--no-unpack", "-q", set.reg.ref(refLarge, "latest")); err != nil {
		return nil, err
	}
	node, err := startServeNode(e, root)
	if err != nil {
		return nil, err
	}
	defer node.stop()

	big := set.large.layers[len(set.large.layers)-1]
	// One client for both sides: keep-alive, no compression, and a read
	// buffer the size of getBlob's reads.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 32, ReadBufferSize: 1 << 20}}
	hex := big.digest.Encoded()
	res, err := bestReads(client, []blobServer{
		{fmt.Sprintf("http://%s/v2/%s/blobs/%s", node.host, refLarge, big.digest), filepath.Join(root, "blobs", "sha256", hex), node.pid},
		{fmt.Sprintf("http://%s/v2/%s/blobs/%s", set.reg.host, refLarge, big.digest),
			filepath.Join(set.reg.dir, "storage", "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data"), set.reg.cmd.Process.Pid},
	}, big.size, serveRuns)
	if err != nil {
		return nil, err
	}
	ours, theirs := res[0], res[1]
	perGiB := func(r blobReads) string {
		return fmt.Sprintf("%.2fs CPU/GiB", r.cpu.Seconds()/(float64(big.size)/(1<<30)))
	}
	rows := []Row{{
		Name: fmt.Sprintf("serve: %s blob, warm, best of %d alternating", mib(big.size), serveRuns),
		Ours: fmt.Sprintf("%s, %s, paired median %.2fx (load %s)",
			rate(big.size, ours.best), perGiB(ours), pairedRatio(theirs, ours), loadAvg()),
		Baseline: rate(big.size, theirs.best) + ", " + perGiB(theirs) + " docker-registry",
		Ratio:    fmt.Sprintf("%.2fx", theirs.best.Seconds()/ours.best.Seconds()),
		Goal:     ">= 1.0x throughput",
	}}

	const clients = 16
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- getBlob(client, fmt.Sprintf("http://%s/v2/%s/blobs/%s", node.host, refLarge, big.digest), big.size)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			return nil, err
		}
	}
	peak, err := vmHWM(node.pid)
	if err != nil {
		return nil, err
	}
	rows = append(rows, Row{
		Name: fmt.Sprintf("serve: %d clients of one blob", clients), Ours: rate(clients*big.size, elapsed) + " total, peak RSS " + mib(peak),
		Goal: "RSS <= 128 MiB",
	})
	node.stop()

	fleet, err := benchFleet(e, set)
	if err != nil {
		return nil, err
	}
	return append(rows, fleet...), nil
}

// vmHWM reads a process's peak resident set size from /proc.
func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}

// countingProxy stands in front of the upstream registry and counts the
// body bytes it answers with.
type countingProxy struct {
	host  string
	bytes atomic.Int64
	srv   *http.Server
}

func startCountingProxy(upstream string) (*countingProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{host: l.Addr().String()}
	target, _ := url.Parse("http://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &p.bytes}
		return nil
	}
	p.srv = &http.Server{Handler: rp}
	go p.srv.Serve(l)
	atExit(func() { p.srv.Close() })
	return p, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// benchFleet: 8 nodes, each listing the 7 others as hosts.toml mirrors
// before the upstream. One node pulls the realistic image first, then the
// other seven pull at once; the upstream (behind a counting proxy) should
// serve about one image's bytes, not eight.
func benchFleet(e *env, set *images) ([]Row, error) {
	const nodes = 8
	proxy, err := startCountingProxy(set.reg.host)
	if err != nil {
		return nil, err
	}
	defer proxy.srv.Close()
	var fleet []*servedNode
	for i := 0; i < nodes; i++ {
		n, err := startServeNode(e, filepath.Join(e.work, fmt.Sprintf("fleet-%d", i)))
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(n.root)
		defer n.stop()
		fleet = append(fleet, n)
	}
	ref := set.reg.ref(refRealistic, "latest")
	pull := func(i int) error {
		dir := filepath.Join(e.work, fmt.Sprintf("fleet-hosts-%d", i))
		var b strings.Builder
		fmt.Fprintf(&b, "server = \"http://%s\"\n", proxy.host)
		for j := 1; j < nodes; j++ {
			fmt.Fprintf(&b, "\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", fleet[(i+j)%nodes].host)
		}
		if err := os.MkdirAll(filepath.Join(dir, set.reg.host), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, set.reg.host, "hosts.toml"), []byte(b.String()), 0o644); err != nil {
			return err
		}
		_, err := runTimed(10*time.Minute, e.casfs, "--root", fleet[i].root, "image", "pull", "--hosts-dir", dir, "--no-unpack", "-q", ref)
		return err
	}
	start := time.Now()
	if err := pull(0); err != nil {
		return nil, err
	}
	first := time.Since(start)
	var wg sync.WaitGroup
	errs := make(chan error, nodes)
	for i := 1; i < nodes; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- pull(i) }()
	}
	wg.Wait()
	total := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			return nil, err
		}
	}
	one := set.realistic.compressed() + set.realistic.config.size + int64(len(set.realistic.manifest))
	served := proxy.bytes.Load()
	for _, n := range fleet {
		out, err := exec.Command(e.casfs, "--root", n.root, "image", "ls", "-q").Output()
		if err != nil || !strings.Contains(string(out), ref) {
			return nil, fmt.Errorf("fleet node %s does not have %s after the pulls: %v", n.root, ref, err)
		}
	}
	return []Row{{
		Name:     fmt.Sprintf("serve: fleet of %d, upstream bytes", nodes),
		Ours:     fmt.Sprintf("%s (%.2f images); %s total, first %s", mib(served), float64(served)/float64(one), secs(total), secs(first)),
		Baseline: fmt.Sprintf("%s (%d images, no peers)", mib(nodes*one), nodes),
		Ratio:    fmt.Sprintf("%.2fx", float64(served)/float64(one)),
		Goal:     "<= 1.2x one image",
	}}, nil
}
