package testenv

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// registryBinary is the distribution v2.8 registry shipped by Debian's
// docker-registry package.
const registryBinary = "docker-registry"

// readyTimeout bounds how long StartRegistry waits for GET /v2/ to answer.
const readyTimeout = 20 * time.Second

// RegistryOptions selects how a test registry is served.
type RegistryOptions struct {
	// TLS serves https with a certificate for 127.0.0.1 and localhost signed
	// by a CA the harness generates (Registry.CACertPath).
	TLS bool
	// Auth requires htpasswd basic auth with a generated user and password
	// (Registry.Username, Registry.Password).
	Auth bool
	// ClientCA requires TLS client certificates signed by the harness CA and
	// generates one (Registry.ClientCertPath, ClientKeyPath). Implies TLS.
	ClientCA bool
	// ProxyRemoteURL runs the registry as a pull-through cache of this
	// upstream. A proxy registry refuses pushes. It cannot log in to a
	// basic-auth upstream (distribution v2.8 finds proxy credentials through
	// token-auth realms only), so proxy an upstream without Auth.
	ProxyRemoteURL string
	// ProxyCACertPath is a PEM file the proxy trusts for an https upstream
	// (typically the upstream Registry.CACertPath).
	ProxyCACertPath string
	// DeleteEnabled allows DELETE of manifests and blobs.
	DeleteEnabled bool
}

// Registry is a running docker-registry process owned by one test.
type Registry struct {
	Host       string // "127.0.0.1:PORT"
	URL        string // "http://127.0.0.1:PORT" or "https://..."
	Port       int
	StorageDir string // filesystem storage root
	Dir        string // temp dir with config, log, htpasswd and certs
	ConfigPath string
	LogPath    string // the registry's stdout and stderr, appended across restarts

	// CertsDir is a containerd-style certs.d root; CADir is its <host>
	// folder (CertsDir/Host) with ca.crt and, with ClientCA, client.cert and
	// client.key. Empty without TLS.
	CertsDir, CADir                           string
	CACertPath, ClientCertPath, ClientKeyPath string
	CA                                        *CA // nil without TLS

	Username, Password string // empty without Auth

	opts RegistryOptions

	id   string // answers carry it in registryIDHeader
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
}

// StartRegistry starts a registry for t, waits until GET /v2/ answers and
// registers a cleanup that stops it. It fails t, with the tail of the
// registry's log, if the registry does not answer within 20 seconds.
func StartRegistry(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	Require(t, registryBinary)
	if opts.ClientCA {
		opts.TLS = true
	}
	dir := t.TempDir()
	r := &Registry{
		StorageDir: filepath.Join(dir, "storage"),
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "config.yml"),
		LogPath:    filepath.Join(dir, "registry.log"),
		opts:       opts,
		id:         strconv.FormatInt(time.Now().UnixNano(), 36) + strconv.Itoa(os.Getpid()),
	}
	t.Cleanup(r.Stop)
	// A free port may be taken by a registry of a parallel test before ours
	// binds it: ours then exits, and we try another port.
	for attempt := 1; ; attempt++ {
		r.Port = FreePort(t)
		r.Host = "127.0.0.1:" + strconv.Itoa(r.Port)
		r.URL = "http://" + r.Host
		if err := r.prepare(); err != nil {
			t.Fatalf("prepare registry: %v", err)
		}
		err := r.launch()
		if err == nil {
			return r
		}
		if !errors.Is(err, errRegistryExited) || attempt == 5 {
			t.Fatalf("registry %s did not become ready: %v\n--- registry log tail ---\n%s", r.Host, err, r.LogTail())
		}
	}
}

// errRegistryExited is a registry process that ended before it answered
// (typically: its port was taken).
var errRegistryExited = errors.New("registry process exited")

func (r *Registry) prepare() error {
	if err := os.MkdirAll(r.StorageDir, 0o755); err != nil {
		return err
	}
	if r.opts.TLS {
		if err := r.writeCerts(); err != nil {
			return err
		}
		r.URL = "https://" + r.Host
	}
	if r.opts.Auth {
		if err := r.writeHtpasswd(); err != nil {
			return err
		}
	}
	return os.WriteFile(r.ConfigPath, []byte(r.config()), 0o600)
}

func (r *Registry) writeCerts() error {
	ca, err := NewCA()
	if err != nil {
		return err
	}
	r.CA = ca
	r.CertsDir = filepath.Join(r.Dir, "certs.d")
	r.CADir = filepath.Join(r.CertsDir, r.Host)
	if err := os.MkdirAll(r.CADir, 0o755); err != nil {
		return err
	}
	r.CACertPath = filepath.Join(r.CADir, "ca.crt")
	if err := os.WriteFile(r.CACertPath, ca.CertPEM, 0o644); err != nil {
		return err
	}
	// The server's own pair stays outside CADir: containerd would read any
	// *.cert/*.key pair there as a client certificate.
	cert, key, err := ca.ServerCert("127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "server.crt"), cert, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "server.key"), key, 0o600); err != nil {
		return err
	}
	if !r.opts.ClientCA {
		return nil
	}
	cert, key, err = ca.ClientCert("casfs test client")
	if err != nil {
		return err
	}
	r.ClientCertPath = filepath.Join(r.CADir, "client.cert")
	r.ClientKeyPath = filepath.Join(r.CADir, "client.key")
	if err := os.WriteFile(r.ClientCertPath, cert, 0o644); err != nil {
		return err
	}
	return os.WriteFile(r.ClientKeyPath, key, 0o600)
}

// writeHtpasswd hashes a random password with bcrypt through htpasswd(1),
// passing the password on stdin so that it never shows in a process list.
func (r *Registry) writeHtpasswd() error {
	if _, err := lookPath("htpasswd"); err != nil {
		return fmt.Errorf("auth needs htpasswd (apache2-utils): %w", err)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	r.Username = "casfs-test"
	r.Password = hex.EncodeToString(b)
	cmd := exec.Command("htpasswd", "-iBn", r.Username)
	cmd.Stdin = strings.NewReader(r.Password + "\n")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("htpasswd: %w", err)
	}
	return os.WriteFile(filepath.Join(r.Dir, "htpasswd"), out, 0o600)
}

// config renders the registry's YAML. Paths are quoted with strconv.Quote,
// which YAML reads as a double-quoted string.
func (r *Registry) config() string {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n")
	fmt.Fprintf(&b, "storage:\n  filesystem:\n    rootdirectory: %s\n", q(r.StorageDir))
	fmt.Fprintf(&b, "  delete:\n    enabled: %t\n", r.opts.DeleteEnabled)
	// No background upload purging: it would touch storage behind a test.
	fmt.Fprintf(&b, "  maintenance:\n    uploadpurging:\n      enabled: false\n")
	// The id header tells this registry's answers from another test's on a reused port.
	fmt.Fprintf(&b, "http:\n  addr: %s\n  headers:\n    X-Content-Type-Options: [nosniff]\n    %s: [%s]\n", q(r.Host), registryIDHeader, q(r.id))
	if r.opts.TLS {
		fmt.Fprintf(&b, "  tls:\n    certificate: %s\n    key: %s\n",
			q(filepath.Join(r.Dir, "server.crt")), q(filepath.Join(r.Dir, "server.key")))
		if r.opts.ClientCA {
			fmt.Fprintf(&b, "    clientcas:\n      - %s\n", q(r.CACertPath))
		}
	}
	if r.opts.Auth {
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: casfs-test\n    path: %s\n", q(filepath.Join(r.Dir, "htpasswd")))
	}
	if r.opts.ProxyRemoteURL != "" {
		fmt.Fprintf(&b, "proxy:\n  remoteurl: %s\n", q(r.opts.ProxyRemoteURL))
	}
	return b.String()
}

// registryIDHeader carries a registry's id in every answer.
const registryIDHeader = "X-Casfs-Test-Registry"

// start launches the process and waits for GET /v2/ to answer.
func (r *Registry) start(t testing.TB) {
	t.Helper()
	if err := r.launch(); err != nil {
		t.Fatalf("registry %s did not become ready: %v\n--- registry log tail ---\n%s", r.Host, err, r.LogTail())
	}
}

// launch starts the process and waits until it answers as itself.
func (r *Registry) launch() error {
	bin, err := lookPath(registryBinary)
	if err != nil {
		return fmt.Errorf("start registry: %w", err)
	}
	logf, err := os.OpenFile(r.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open registry log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd := exec.Command(bin, "serve", r.ConfigPath)
	cmd.Dir = r.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = childAttr()
	cmd.Env = os.Environ()
	if r.opts.ProxyCACertPath != "" {
		cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+r.opts.ProxyCACertPath)
	}

	r.mu.Lock()
	if r.cmd != nil {
		r.mu.Unlock()
		return fmt.Errorf("start registry %s: already running", r.Host)
	}
	if err := startChild(cmd); err != nil {
		r.mu.Unlock()
		return fmt.Errorf("start registry: %w", err)
	}
	done := make(chan struct{})
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()

	if err := r.waitReady(done); err != nil {
		r.Stop()
		return err
	}
	return nil
}

// waitReady polls GET /v2/ until the registry answers with 200 or 401 (auth
// required), the process exits, or readyTimeout passes.
func (r *Registry) waitReady(exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	client := r.Client()
	client.Timeout = 2 * time.Second
	defer client.CloseIdleConnections()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/v2/", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			switch {
			case resp.Header.Get(registryIDHeader) != r.id:
				err = fmt.Errorf("GET /v2/: answered by another registry")
			case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized:
				return nil
			default:
				err = fmt.Errorf("GET /v2/: %s", resp.Status)
			}
		}
		last = err
		select {
		case <-exited:
			return errRegistryExited
		case <-ctx.Done():
			return fmt.Errorf("no answer within %s: %v", readyTimeout, last)
		case <-tick.C:
		}
	}
}

// Stop terminates the registry (SIGTERM to its process group, SIGKILL after
// five seconds) and waits for it. Calling Stop again does nothing.
func (r *Registry) Stop() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd, r.done = nil, nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	// Anything left in the group (there should be nothing) goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// Restart stops the registry and starts it again on the same port with the
// same storage, config and credentials.
func (r *Registry) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	r.start(t)
}

// Running reports whether the registry process is alive.
func (r *Registry) Running() bool {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Client returns a new HTTP client that trusts the registry's CA and
// presents its client certificate when it has one. It sends no credentials:
// use Username and Password for that.
func (r *Registry) Client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.CA != nil {
		cfg := &tls.Config{RootCAs: r.CA.Pool(), MinVersion: tls.VersionTLS12}
		if r.ClientCertPath != "" {
			if cert, err := tls.LoadX509KeyPair(r.ClientCertPath, r.ClientKeyPath); err == nil {
				cfg.Certificates = []tls.Certificate{cert}
			}
		}
		tr.TLSClientConfig = cfg
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// Ref returns "HOST/repo:tag", a reference to an image on this registry.
func (r *Registry) Ref(repo, tag string) string {
	return r.Host + "/" + repo + ":" + tag
}

// LogTail returns about the last 4 KiB of the registry's log.
func (r *Registry) LogTail() string {
	const n = 4096
	f, err := os.Open(r.LogPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	off := max(fi.Size()-n, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return "(log unreadable: " + err.Error() + ")"
	}
	return string(buf)
}
