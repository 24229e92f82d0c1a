// Package conformance runs the OCI distribution-spec conformance suite, pull
// and content-discovery APIs, against `casfs serve`. It is its own module so
// that the suite's dependencies stay out of casfs's go.mod.
package conformance

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
)

const repo = "conformance/repo1"

// TestConformancePull seeds a store with an image pulled from a real
// registry, serves it with casfs serve (no push), and runs the suite with
// the read-only inputs the suite documents: a tag, manifests, blobs and a
// subject for the referrers API.
func TestConformancePull(t *testing.T) {
	dir := t.TempDir()
	casfs := filepath.Join(dir, "casfs")
	build := testenv.CasfsBuild("../..", casfs, false)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build casfs: %v\n%s", err, out)
	}

	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img, err := testimage.Build(testimage.ImageSpec{
		Layers: []testimage.Layer{
			{Files: []testimage.File{testimage.Reg("etc/motd", 0o644, "conformance\n")}},
			{Files: []testimage.File{testimage.Reg("data/x", 0o644, strings.Repeat("x", 1<<16))}, Compression: "none"},
		},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/true"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testimage.Push(ctx, reg.URL, repo, "v1", img.Blobs, img.Manifest, reg.Client()); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "store")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(casfs, append([]string{"--root", root}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("casfs %v: %v\n%s", args, err, out)
		}
	}
	run("image", "pull", "--plain-http", "--no-unpack", "-q", reg.Ref(repo, "v1"))
	reg.Stop()

	host := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	srv := exec.Command(casfs, "--root", root, "serve", "--addr", host)
	stdout, _ := srv.StdoutPipe()
	srvLog := filepath.Join(dir, "serve.log")
	logf, err := os.Create(srvLog)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	srv.Stderr = logf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
		exited <- srv.Wait()
	}()
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("casfs serve after SIGTERM: %v", err)
			}
		case <-time.After(time.Minute):
			srv.Process.Kill()
			t.Errorf("casfs serve did not stop within a minute of SIGTERM")
		}
	})
	select {
	case l := <-line:
		if !strings.Contains(l, "http://"+host) {
			t.Fatalf("casfs serve printed %q", l)
		}
	case <-time.After(time.Minute):
		t.Fatal("casfs serve did not start within a minute")
	}

	blobs := []string{img.Config.Digest.String()}
	for _, l := range img.Layers {
		blobs = append(blobs, l.Digest.String())
	}
	results := filepath.Join(dir, "results")
	suite := exec.Command("go", "tool", "conformance")
	suite.Env = append(os.Environ(),
		"OCI_REGISTRY="+host, "OCI_TLS=disabled", "OCI_VERSION=1.1",
		"OCI_REPO1="+repo, "OCI_REPO2=conformance/repo2", "OCI_RESULTS_DIR="+results,
		"OCI_API_PULL=true", "OCI_API_PUSH=false",
		"OCI_API_BLOBS_DELETE=false", "OCI_API_MANIFESTS_DELETE=false", "OCI_API_TAGS_DELETE=false",
		"OCI_API_TAGS_LIST=true", "OCI_API_REFERRER=true",
		"OCI_RO_DATA_TAGS=v1",
		"OCI_RO_DATA_MANIFESTS="+img.Manifest.Digest.String(),
		"OCI_RO_DATA_BLOBS="+strings.Join(blobs, " "),
		"OCI_RO_DATA_REFERRERS="+img.Manifest.Digest.String(),
	)
	var suiteOut, suiteErr strings.Builder
	suite.Stdout, suite.Stderr = &suiteOut, &suiteErr
	err = suite.Run()
	t.Logf("conformance suite:\n%s", suiteOut.String())
	// The suite prints its report, then writes results.yaml, which panics
	// when push is disabled (it records a status for the skipped push data
	// without its description). The printed report is the result.
	if err != nil && !strings.Contains(suiteErr.String(), "ReportResultsYAML") {
		b, _ := os.ReadFile(srvLog)
		t.Fatalf("conformance suite: %v\n%s\ncasfs serve log:\n%s", err, suiteErr.String(), b)
	}
	report := suiteOut.String()
	for _, want := range []string{
		"OCI Conformance Result: Pass",
		"Ping", "Tag listing", "Blob get", "Blob head", "Manifest get by digest", "Manifest get by tag",
		"Manifest head by digest", "Manifest head by tag", "Referrers", "Read Only Inputs",
	} {
		if !reportPasses(report, want) {
			t.Errorf("conformance: %q did not pass", want)
		}
	}
	for _, zero := range []string{"FAIL", "Error"} {
		if !reportCount(report, zero, 0) {
			t.Errorf("conformance: %s count is not 0", zero)
		}
	}
}

// reportPasses finds the report line that starts with name and says Pass.
func reportPasses(report, name string) bool {
	for _, l := range strings.Split(report, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, name) {
			f := strings.Fields(l)
			if f[len(f)-1] == "Pass" {
				return true
			}
		}
	}
	return false
}

// reportCount checks the summary line "name....: n".
func reportCount(report, name string, n int) bool {
	for _, l := range strings.Split(report, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, name+".") {
			f := strings.Fields(l)
			return f[len(f)-1] == strconv.Itoa(n)
		}
	}
	return false
}
