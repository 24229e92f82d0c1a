// Command bench measures casfs against its baselines in one invocation and
// prints one table: our figure, the baseline's, their ratio and the goal.
// It is run by `make bench`; nothing here is a test.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Row is one measured figure.
type Row struct {
	Name     string
	Ours     string
	Baseline string
	Ratio    string
	Goal     string
}

type scenario struct {
	name string
	run  func(e *env) ([]Row, error)
}

// env is what every scenario shares: the binary and a scratch directory.
type env struct {
	casfs string
	work  string
	quick bool
	imgs  *images // built and pushed on first use

	discarded int // trees moved aside by discard so far
}

var scenarios = []scenario{
	{"ingest", benchIngest},
	{"content-scale", benchContentScale},
	{"fetch", benchFetch},
	{"pull", benchPull},
	{"fuse", benchFUSE},
	{"archives", benchArchives},
	{"gc", benchGC},
	{"serve", benchServe},
	{"lazy", benchLazy},
}

func main() {
	casfs := flag.String("casfs", "bin/casfs", "casfs binary")
	only := flag.String("only", "", "comma-separated scenarios to run (default all)")
	out := flag.String("out", "docs/bench.md", "where to write the table")
	quick := flag.Bool("quick", false, "smaller inputs, for trying the harness")
	flag.Parse()
	begin := time.Now()

	bin, err := filepath.Abs(*casfs)
	if err != nil {
		fatal(err)
	}
	work, err := os.MkdirTemp("/var/tmp", "casfs-bench-")
	if err != nil {
		fatal(err)
	}
	atExit(func() { os.RemoveAll(work) })
	// Mounts, daemons and the registry must not outlive an interrupted run.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		logf("%s: cleaning up", s)
		runCleanups()
		os.Exit(130)
	}()
	e := &env{casfs: bin, work: work, quick: *quick}

	var rows []Row
	failed := false
	for _, s := range scenarios {
		if *only != "" && !strings.Contains(","+*only+",", ","+s.name+",") {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s ...\n", s.name)
		start := time.Now()
		r, err := s.run(e)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", s.name, err)
			rows = append(rows, Row{Name: s.name, Ours: "error: " + err.Error()})
			failed = true
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s done in %s\n", s.name, time.Since(start).Round(time.Second))
		rows = append(rows, r...)
	}
	runCleanups()
	table := render(rows)
	fmt.Print(table)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err == nil {
		os.WriteFile(*out, []byte(machine()+"\n"+table), 0o644)
	}
	fmt.Fprintf(os.Stderr, "bench: total %s\n", time.Since(begin).Round(time.Second))
	if failed {
		os.Exit(1)
	}
}

func render(rows []Row) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "| benchmark\t| casfs\t| baseline\t| ratio\t| goal\t|")
	fmt.Fprintln(tw, "|---\t|---\t|---\t|---\t|---\t|")
	for _, r := range rows {
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %s\t| %s\t|\n", r.Name, r.Ours, r.Baseline, r.Ratio, r.Goal)
	}
	tw.Flush()
	return b.String()
}

func machine() string {
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	load, _ := os.ReadFile("/proc/loadavg")
	return fmt.Sprintf("Measured %s on %s: %d cores (%s), %s, kernel %s, %s; %s; %s; load average at the end %s.\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), cpuModel(), memTotal(),
		strings.TrimSpace(string(kernel)), runtime.Version(), version("containerd", "--version"),
		version("skopeo", "--version"), strings.Join(strings.Fields(string(load))[:3], " "))
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func version(cmd string, args ...string) string {
	out, err := exec.Command(cmd, args...).Output()
	if err != nil {
		return cmd + " (not found)"
	}
	return strings.TrimSpace(string(out))
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			var kb int64
			fmt.Sscanf(strings.TrimPrefix(l, "MemTotal:"), "%d", &kb)
			return fmt.Sprintf("%.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return "unknown RAM"
}

func fatal(err error) {
	runCleanups()
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
