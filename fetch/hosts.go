package fetch

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/casfs/casfs/errdefs"
)

// defaultHostsDirs are where hosts.toml directories are looked up when no
// directory is named: casfs's own, then containerd's, then docker's
// (whose <host>/ca.crt, client.cert and client.key layout is read too);
// the first that exists is used.
var defaultHostsDirs = []string{"/etc/casfs/certs.d", "/etc/containerd/certs.d", "/etc/docker/certs.d"}

// defaultHostsDir is the first of defaultHostsDirs that exists ("" when
// none does: every registry gets the defaults).
func defaultHostsDir() string {
	for _, d := range defaultHostsDirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			slog.Debug("registry host configuration", "dir", d)
			return d
		}
	}
	return ""
}

// capabilitySet says which operations an endpoint is trusted with.
type capabilitySet uint8

const (
	capPull capabilitySet = 1 << iota
	capResolve
	capPush

	capAll = capPull | capResolve | capPush
)

func (c capabilitySet) Has(x capabilitySet) bool { return c&x == x }

func (c capabilitySet) String() string {
	var s []string
	for _, n := range []struct {
		c    capabilitySet
		name string
	}{{capPull, "pull"}, {capResolve, "resolve"}, {capPush, "push"}} {
		if c.Has(n.c) {
			s = append(s, n.name)
		}
	}
	return strings.Join(s, ",")
}

// hostEndpoint is one place to talk to for a registry namespace: a mirror or
// the server itself.
type hostEndpoint struct {
	// Namespace is the registry host the image name carries (docker.io,
	// localhost:5000); credentials and source labels use it.
	Namespace string
	// URL is scheme://host[:port] of the endpoint.
	URL *url.URL
	// APIRoot is the path that replaces "/v2" in requests ("/v2" unless
	// the hosts.toml entry carried a path).
	APIRoot      string
	Capabilities capabilitySet
	Mirror       bool // false for the namespace's server
	Header       http.Header
	// Client has the endpoint's TLS settings and bounded timeouts; it does
	// no authentication (the Resolver wraps it in an oras auth.Client).
	Client *http.Client
	// Deadlines are the endpoint's read deadlines, defaults filled in.
	Deadlines ReadDeadlines
}

// PlainHTTP reports whether the endpoint speaks http rather than https.
func (e hostEndpoint) PlainHTTP() bool { return e.URL.Scheme == "http" }

// String names the endpoint for errors and logs.
func (e hostEndpoint) String() string { return e.URL.String() + strings.TrimSuffix(e.APIRoot, "/v2") }

// hostsOptions tune loadEndpoints.
type hostsOptions struct {
	// PlainHTTP makes the default server (no hosts.toml, or one without
	// `server`) and scheme-less entries speak http; an explicit https:// in
	// hosts.toml is kept.
	PlainHTTP bool
	// Timeout bounds dialing, the TLS handshake and waiting for response
	// headers. Default 30 s.
	Timeout time.Duration
	// Deadlines, where set, win over hosts.toml's.
	Deadlines ReadDeadlines
	// TLS, where set, wins over hosts.toml's ca, client and skip_verify
	// for every endpoint.
	TLS TLSOptions
	// Config is config.toml's registry section: mirrors for a namespace
	// without hosts.toml, and TLS settings hosts.toml leaves unsaid.
	Config *RegistryConfig
}

// TLSOptions are TLS settings given on the command line (ctr's
// --skip-verify, --tlscacert, --tlscert, --tlskey). Paths must be absolute:
// they may be read by another process (the daemon) in another directory.
type TLSOptions struct {
	SkipVerify bool   `json:"skipVerify,omitempty"`
	CAFile     string `json:"caFile,omitempty"`
	CertFile   string `json:"certFile,omitempty"`
	KeyFile    string `json:"keyFile,omitempty"` // "" when the key is in CertFile
}

// Validate reports settings that cannot work: a key without a
// certificate, or relative paths.
func (t TLSOptions) Validate() error {
	if t.KeyFile != "" && t.CertFile == "" {
		return fmt.Errorf("a TLS client key needs its certificate: %w", errdefs.ErrInvalidArgument)
	}
	for _, p := range []string{t.CAFile, t.CertFile, t.KeyFile} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("TLS file %s: path must be absolute: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// over returns cfg with t's settings in place of its own.
func (t TLSOptions) over(cfg hostConfig) hostConfig {
	if t.SkipVerify {
		// Nothing is verified, so hosts.toml's CA files are not read.
		skip := true
		cfg.SkipVerify, cfg.CA = &skip, nil
	}
	if t.CAFile != "" {
		cfg.CA = t.CAFile
	}
	if t.CertFile != "" {
		cfg.Client = []any{[]any{t.CertFile, t.KeyFile}}
	}
	return cfg
}

// hostConfig is one [host."URL"] table, or the top level of a hosts.toml.
type hostConfig struct {
	Capabilities []string       `toml:"capabilities"`
	CA           any            `toml:"ca"`
	Client       any            `toml:"client"`
	SkipVerify   *bool          `toml:"skip_verify"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
	DialTimeout  string         `toml:"dial_timeout"`
	// casfs's own keys (see ReadDeadlines).
	ProgressTimeout string `toml:"progress_timeout"`
	ProgressBytes   int64  `toml:"progress_bytes"`
	ManifestTimeout string `toml:"manifest_timeout"`
}

type hostsFile struct {
	Server string `toml:"server"`
	hostConfig
	Host map[string]hostConfig `toml:"host"`
}

// loadEndpoints returns the endpoints for the registry namespace host, in
// the order to try them: hosts.toml mirrors in file order, then the server.
// dir "" means the first of defaultHostsDirs that exists (none when
// opts.Config is a caller's, whose own default travelled as dir); a missing
// directory means defaults.
func loadEndpoints(dir, host string, opts hostsOptions) ([]hostEndpoint, error) {
	if dir == "" && (opts.Config == nil || !opts.Config.Caller) {
		dir = defaultHostsDir()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	hostDir, hasToml, err := findHostDir(dir, host)
	if err != nil {
		return nil, err
	}
	server := defaultServer(host, opts.PlainHTTP)
	if !hasToml {
		cfg := hostConfig{}
		if hostDir != "" {
			if cfg, err = legacyCertFiles(hostDir); err != nil {
				return nil, err
			}
		}
		var eps []hostEndpoint
		for _, m := range opts.Config.mirrors(host, server) {
			ep, err := newEndpoint(host, m, hostConfig{}, true, "", opts)
			if err != nil {
				return nil, fmt.Errorf("registry config: mirror %q of %s: %w", m, host, err)
			}
			eps = append(eps, ep)
		}
		ep, err := newEndpoint(host, server, cfg, false, hostDir, opts)
		if err != nil {
			return nil, err
		}
		return append(eps, ep), nil
	}
	file := filepath.Join(hostDir, "hosts.toml")
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	var hf hostsFile
	if err := toml.Unmarshal(data, &hf); err != nil {
		return nil, hostsTomlError(file, err)
	}
	var eps []hostEndpoint
	for _, u := range hostOrder(data, hf.Host) {
		ep, err := newEndpoint(host, u, hf.Host[u], true, hostDir, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: host %q: %w", file, u, err)
		}
		eps = append(eps, ep)
	}
	if hf.Server != "" {
		server = hf.Server
	}
	ep, err := newEndpoint(host, server, hf.hostConfig, false, hostDir, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: server %q: %w", file, server, err)
	}
	return append(eps, ep), nil
}

// findHostDir looks for the namespace's folder the way containerd does:
// host_port_, host:port, then _default. hasToml tells whether it holds a
// hosts.toml; a folder without one may still hold legacy cert files.
func findHostDir(dir, host string) (string, bool, error) {
	if dir == "" {
		return "", false, nil
	}
	var names []string
	if h, p, err := net.SplitHostPort(host); err == nil {
		names = append(names, h+"_"+p+"_")
	}
	names = append(names, host)
	for _, n := range names {
		d := filepath.Join(dir, n)
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			_, err := os.Stat(filepath.Join(d, "hosts.toml"))
			return d, err == nil, nil
		}
	}
	d := filepath.Join(dir, "_default")
	if _, err := os.Stat(filepath.Join(d, "hosts.toml")); err == nil {
		return d, true, nil
	}
	return "", false, nil
}

// defaultServer is the server URL when hosts.toml names none.
func defaultServer(host string, plainHTTP bool) string {
	if host == "docker.io" {
		return "https://registry-1.docker.io"
	}
	if plainHTTP {
		return "http://" + host
	}
	return "https://" + host
}

func hostsTomlError(file string, err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return fmt.Errorf("%s:%d:%d: %s: %w", file, line, col, strings.TrimPrefix(de.Error(), "toml: "), errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("%s: %s: %w", file, strings.TrimPrefix(err.Error(), "toml: "), errdefs.ErrInvalidArgument)
}

// hostOrder lists the [host."URL"] keys in file order: TOML maps forget it,
// and containerd tries mirrors in the order written.
func hostOrder(data []byte, hosts map[string]hostConfig) []string {
	var order []string
	p := unstable.Parser{}
	p.Reset(data)
	for p.NextExpression() {
		n := p.Expression()
		if n.Kind != unstable.Table {
			continue
		}
		it := n.Key()
		var parts []string
		for it.Next() {
			parts = append(parts, string(it.Node().Data))
		}
		if len(parts) >= 2 && parts[0] == "host" && !slices.Contains(order, parts[1]) {
			if _, ok := hosts[parts[1]]; ok {
				order = append(order, parts[1])
			}
		}
	}
	// Hosts written as inline tables have no header; keep them, sorted.
	var rest []string
	for h := range hosts {
		if !slices.Contains(order, h) {
			rest = append(rest, h)
		}
	}
	slices.Sort(rest)
	return append(order, rest...)
}

// legacyCertFiles reads docker's certs.d pattern: *.crt are CAs,
// *.cert with a matching *.key are client pairs.
func legacyCertFiles(dir string) (hostConfig, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return hostConfig{}, fmt.Errorf("read %s: %w", dir, err)
	}
	var cas []any
	var clients []any
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".crt"):
			cas = append(cas, name)
		case strings.HasSuffix(name, ".cert"):
			key := strings.TrimSuffix(name, ".cert") + ".key"
			if _, err := os.Stat(filepath.Join(dir, key)); err != nil {
				return hostConfig{}, fmt.Errorf("client certificate %s has no key %s: %w", filepath.Join(dir, name), key, errdefs.ErrInvalidArgument)
			}
			clients = append(clients, []any{name, key})
		}
	}
	cfg := hostConfig{}
	if len(cas) > 0 {
		cfg.CA = cas
	}
	if len(clients) > 0 {
		cfg.Client = clients
	}
	return cfg, nil
}

func newEndpoint(namespace, rawURL string, cfg hostConfig, mirror bool, baseDir string, opts hostsOptions) (hostEndpoint, error) {
	implicitScheme := !strings.Contains(rawURL, "://") || rawURL == defaultServer(namespace, false)
	if !strings.Contains(rawURL, "://") {
		scheme := "https://"
		if opts.PlainHTTP {
			scheme = "http://"
		}
		rawURL = scheme + rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return hostEndpoint{}, fmt.Errorf("not an http(s) URL: %w", errdefs.ErrInvalidArgument)
	}
	ep := hostEndpoint{
		Namespace:    namespace,
		URL:          &url.URL{Scheme: u.Scheme, Host: u.Host},
		APIRoot:      apiRoot(u.Path, cfg.OverridePath),
		Capabilities: capAll,
		Mirror:       mirror,
		Header:       http.Header{},
	}
	if mirror && cfg.Capabilities == nil {
		ep.Capabilities = capPull | capResolve
	}
	if cfg.Capabilities != nil {
		ep.Capabilities = 0
		for _, c := range cfg.Capabilities {
			switch c {
			case "pull":
				ep.Capabilities |= capPull
			case "resolve":
				ep.Capabilities |= capResolve
			case "push":
				ep.Capabilities |= capPush
			default:
				return hostEndpoint{}, fmt.Errorf("unknown capability %q: %w", c, errdefs.ErrInvalidArgument)
			}
		}
	}
	for k, v := range cfg.Header {
		switch v := v.(type) {
		case string:
			ep.Header.Add(k, v)
		case []any:
			for _, s := range v {
				str, ok := s.(string)
				if !ok {
					return hostEndpoint{}, fmt.Errorf("header %s: values must be strings: %w", k, errdefs.ErrInvalidArgument)
				}
				ep.Header.Add(k, str)
			}
		default:
			return hostEndpoint{}, fmt.Errorf("header %s: value must be a string or a list of strings: %w", k, errdefs.ErrInvalidArgument)
		}
	}
	if err := opts.TLS.Validate(); err != nil {
		return hostEndpoint{}, err
	}
	tlsConfig, err := tlsConfigFor(opts.TLS.over(opts.Config.under(cfg, u.Host)), baseDir)
	if err != nil {
		return hostEndpoint{}, err
	}
	dial := opts.Timeout
	if cfg.DialTimeout != "" {
		d, err := time.ParseDuration(cfg.DialTimeout)
		if err != nil || d <= 0 {
			return hostEndpoint{}, fmt.Errorf("dial_timeout %q: %w", cfg.DialTimeout, errdefs.ErrInvalidArgument)
		}
		dial = d
	}
	d, err := cfg.deadlines()
	if err != nil {
		return hostEndpoint{}, err
	}
	ep.Deadlines = opts.Deadlines.Or(d).withDefaults()
	ep.Client = newHTTPClient(tlsConfig, dial, opts.Timeout, ep.Deadlines)
	wrapHTTPFallback(&ep, implicitScheme)
	wrapEndpointTransport(&ep)
	wrapRequestLog(&ep)
	return ep, nil
}

// apiRoot maps a hosts.toml URL path to the prefix used instead of /v2:
// containerd appends /v2 unless override_path says the path is the root.
func apiRoot(p string, override bool) string {
	if p == "" || p == "/" {
		return "/v2"
	}
	p = path.Clean("/" + p)
	if override || strings.HasSuffix(p, "/v2") {
		return p
	}
	return p + "/v2"
}

func resolvePath(baseDir, p string) string {
	if filepath.IsAbs(p) || baseDir == "" {
		return p
	}
	return filepath.Join(baseDir, p)
}

func tlsConfigFor(cfg hostConfig, baseDir string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.SkipVerify != nil && *cfg.SkipVerify {
		tc.InsecureSkipVerify = true
	}
	cas, err := stringList(cfg.CA, "ca")
	if err != nil {
		return nil, err
	}
	if len(cas) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		for _, c := range cas {
			f := resolvePath(baseDir, c)
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("ca: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca %s: no PEM certificate found: %w", f, errdefs.ErrInvalidArgument)
			}
		}
		tc.RootCAs = pool
	}
	pairs, err := clientPairs(cfg.Client)
	if err != nil {
		return nil, err
	}
	for _, pr := range pairs {
		certFile := resolvePath(baseDir, pr[0])
		keyFile := certFile
		if pr[1] != "" {
			keyFile = resolvePath(baseDir, pr[1])
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s: %v: %w", certFile, err, errdefs.ErrInvalidArgument)
		}
		tc.Certificates = append(tc.Certificates, cert)
	}
	return tc, nil
}

func stringList(v any, field string) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		var out []string
		for _, s := range v {
			str, ok := s.(string)
			if !ok {
				return nil, fmt.Errorf("%s: entries must be paths: %w", field, errdefs.ErrInvalidArgument)
			}
			out = append(out, str)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: must be a path or a list of paths: %w", field, errdefs.ErrInvalidArgument)
}

// clientPairs accepts "cert.pem", ["a.pem", "b.pem"] and
// [["c.cert", "c.key"], ["d.pem", ""]]; an empty key means the key is in
// the cert file.
func clientPairs(v any) ([][2]string, error) {
	bad := fmt.Errorf("client: must be a path, a list of paths or a list of [cert, key] pairs: %w", errdefs.ErrInvalidArgument)
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return [][2]string{{v, ""}}, nil
	case []any:
		var out [][2]string
		for _, e := range v {
			switch e := e.(type) {
			case string:
				out = append(out, [2]string{e, ""})
			case []any:
				if len(e) < 1 || len(e) > 2 {
					return nil, bad
				}
				var pr [2]string
				for i, s := range e {
					str, ok := s.(string)
					if !ok {
						return nil, bad
					}
					pr[i] = str
				}
				out = append(out, pr)
			default:
				return nil, bad
			}
		}
		return out, nil
	}
	return nil, bad
}
