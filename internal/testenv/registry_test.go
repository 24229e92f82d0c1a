package testenv

import (
	"crypto/tls"
	"errors"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
)

func get(t *testing.T, c *http.Client, url, user, pass string) (int, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestRegistryPlainStopRestart(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{})
	if !strings.HasPrefix(r.URL, "http://127.0.0.1:") || r.Host != strings.TrimPrefix(r.URL, "http://") {
		t.Fatalf("unexpected URL %q host %q", r.URL, r.Host)
	}
	code, err := get(t, r.Client(), r.URL+"/v2/", "", "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /v2/ = %d, %v; want 200", code, err)
	}
	cfg, err := os.ReadFile(r.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`addr: "127.0.0.1:`, r.StorageDir} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(string(cfg), "debug") || strings.Contains(string(cfg), "notifications") {
		t.Errorf("config has debug or notifications:\n%s", cfg)
	}

	r.mu.Lock()
	pid := r.cmd.Process.Pid
	r.mu.Unlock()
	r.Stop()
	r.Stop() // idempotent
	if r.Running() {
		t.Fatal("Running after Stop")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("registry pid %d still exists after Stop: %v", pid, err)
	}
	if _, err := get(t, &http.Client{}, r.URL+"/v2/", "", ""); err == nil {
		t.Fatal("GET /v2/ answered after Stop")
	}

	r.Restart(t)
	code, err = get(t, r.Client(), r.URL+"/v2/", "", "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("after Restart GET /v2/ = %d, %v; want 200", code, err)
	}
	if !strings.Contains(r.LogTail(), "listening on 127.0.0.1:") {
		t.Errorf("log tail lacks the listening line:\n%s", r.LogTail())
	}
}

func TestRegistryTLSAuth(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{TLS: true, Auth: true})
	if !strings.HasPrefix(r.URL, "https://") || r.Username == "" || r.Password == "" {
		t.Fatalf("URL %q user %q: want https and credentials", r.URL, r.Username)
	}
	if _, err := os.Stat(r.CACertPath); err != nil {
		t.Fatal(err)
	}
	if code, err := get(t, r.Client(), r.URL+"/v2/", "", ""); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /v2/ = %d, %v; want 401", code, err)
	}
	if code, err := get(t, r.Client(), r.URL+"/v2/", r.Username, "wrong"); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("wrong password GET /v2/ = %d, %v; want 401", code, err)
	}
	if code, err := get(t, r.Client(), r.URL+"/v2/", r.Username, r.Password); err != nil || code != http.StatusOK {
		t.Fatalf("GET /v2/ with credentials = %d, %v; want 200", code, err)
	}
	// Without the CA the certificate is not trusted.
	_, err := get(t, &http.Client{}, r.URL+"/v2/", r.Username, r.Password)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("GET without CA: err = %v; want a certificate error", err)
	}
	// The certificate also names localhost.
	c := r.Client()
	localhost := strings.Replace(r.URL, "127.0.0.1", "localhost", 1)
	if code, err := get(t, c, localhost+"/v2/", r.Username, r.Password); err != nil || code != http.StatusOK {
		t.Fatalf("GET via localhost = %d, %v; want 200", code, err)
	}
	if strings.Contains(r.LogTail(), r.Password) {
		t.Error("registry log contains the password")
	}
}

func TestRegistryClientCA(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{ClientCA: true})
	for _, p := range []string{r.CADir + "/ca.crt", r.CADir + "/client.cert", r.CADir + "/client.key"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("certs.d layout: %v", err)
		}
	}
	if code, err := get(t, r.Client(), r.URL+"/v2/", "", ""); err != nil || code != http.StatusOK {
		t.Fatalf("GET with client cert = %d, %v; want 200", code, err)
	}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.CA.Pool()}}}
	if code, err := get(t, noCert, r.URL+"/v2/", "", ""); err == nil {
		t.Fatalf("GET without client cert = %d; want a TLS error", code)
	}
}

func TestRequireFindsSbin(t *testing.T) {
	if _, err := lookPath("sh"); err != nil {
		t.Fatal(err)
	}
	if _, err := lookPath("no-such-command-casfs"); err == nil {
		t.Fatal("lookPath found a command that does not exist")
	}
}

func TestRequestCount(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{})
	before := r.RequestCount(http.MethodHead, "/manifests/")
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest(http.MethodHead, r.URL+"/v2/lab/x/manifests/v1", nil)
		resp, err := r.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("HEAD unknown manifest: %s", resp.Status)
		}
	}
	if got := r.RequestCount(http.MethodHead, "/v2/lab/x/manifests/v1") - before; got != 3 {
		t.Fatalf("HEAD count %d, want 3\n%s", got, r.LogTail())
	}
	if got := r.RequestCount(http.MethodGet, "/v2/lab/x/manifests/"); got != 0 {
		t.Fatalf("GET count %d, want 0", got)
	}
	reqs := r.Requests()
	last := reqs[len(reqs)-1]
	if last.Method != http.MethodHead || last.Status != http.StatusNotFound || last.URI != "/v2/lab/x/manifests/v1" {
		t.Fatalf("last request %+v", last)
	}
	// Counts survive a restart: the log is appended to.
	r.Restart(t)
	if got := r.RequestCount(http.MethodHead, "/v2/lab/x/manifests/v1"); got != 3 {
		t.Fatalf("after restart HEAD count %d, want 3", got)
	}
}

func TestRegistryDeleteEnabled(t *testing.T) {
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	for _, tc := range []struct {
		enabled bool
		want    int
	}{{false, http.StatusMethodNotAllowed}, {true, http.StatusNotFound}} {
		r := StartRegistry(t, RegistryOptions{DeleteEnabled: tc.enabled})
		req, _ := http.NewRequest(http.MethodDelete, r.URL+"/v2/lab/x/manifests/"+d, nil)
		resp, err := r.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("delete enabled=%t: DELETE = %s, want %d", tc.enabled, resp.Status, tc.want)
		}
	}
}
