package fetch

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/casfs/casfs/internal/testenv"
)

// FuzzLoadEndpoints reads arbitrary hosts.toml files: it must never panic,
// a syntax error names the file, line and column, and what it accepts are
// usable endpoints with the server last.
func FuzzLoadEndpoints(f *testing.F) {
	const host = "reg.example:5000"
	dir := fuzzTempDir(f)
	hostDir := filepath.Join(dir, host)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		f.Fatal(err)
	}
	// Files a hosts.toml may name, relative to its folder.
	ca, err := testenv.NewCA()
	if err != nil {
		f.Fatal(err)
	}
	cert, key, err := ca.ClientCert("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	for name, data := range map[string][]byte{"ca.crt": ca.CertPEM, "client.cert": cert, "client.key": key, "junk.crt": []byte("not pem")} {
		if err := os.WriteFile(filepath.Join(hostDir, name), data, 0o600); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range []string{
		``, `server = "https://reg.example:5000"`, `server = "http://127.0.0.1:1"`, `server = "reg.example"`,
		"server = \"https://reg.example\"\n[host.\"https://mirror.example/v2/root\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"ca.crt\"\n  skip_verify = false\n  override_path = true\n  [host.\"https://mirror.example/v2/root\".header]\n    x-custom = [\"a\", \"b\"]\n",
		"[host.\"https://m1\"]\n[host.\"https://m2\"]\n[host.\"http://m3:80\"]\ncapabilities = []\n",
		"[host.\"https://m\"]\nclient = [[\"client.cert\", \"client.key\"]]\n",
		"[host.\"https://m\"]\nclient = \"client.cert\"\n", "[host.\"https://m\"]\nca = [\"ca.crt\", \"junk.crt\"]\n",
		"[host.\"https://m\"]\nca = \"missing.crt\"\n", "host = { \"https://inline\" = { capabilities = [\"push\"] } }\n",
		"server = 7\n", "server = \"ftp://x\"\n", "server = \"https://\"\n", "[host.\"::\"]\n", "[host.\"https://m\"]\ncapabilities = [\"fly\"]\n",
		"[host.\"https://m\"]\nheader = { a = 1 }\n", "[[host]]\n", "[host\n", "server = \"a\"\nserver = \"b\"\n", "\x00", "server = \"https://%zz\"\n",
		"[host.\"https://m\"]\nskip_verify = \"yes\"\n", "[host.\"https://m\"]\noverride_path = 1\n",
	} {
		f.Add([]byte(s))
	}
	file := filepath.Join(hostDir, "hosts.toml")
	position := regexp.MustCompile(regexp.QuoteMeta(file) + `:\d+:\d+: `)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		eps, err := loadEndpoints(dir, host, hostsOptions{})
		var hf hostsFile
		var de *toml.DecodeError
		if uerr := toml.Unmarshal(data, &hf); errors.As(uerr, &de) {
			if err == nil || !position.MatchString(err.Error()) {
				t.Fatalf("syntax error %v reported as %v, want %s:LINE:COL", uerr, err, file)
			}
		}
		if err != nil {
			if !strings.Contains(err.Error(), dir) && !strings.Contains(err.Error(), "hosts.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(eps) == 0 || eps[len(eps)-1].Mirror {
			t.Fatalf("%q: endpoints %+v: want at least the server, last", data, eps)
		}
		for _, ep := range eps {
			if ep.URL == nil || ep.URL.Host == "" || (ep.URL.Scheme != "http" && ep.URL.Scheme != "https") {
				t.Fatalf("%q: endpoint URL %v", data, ep.URL)
			}
			if !strings.HasPrefix(ep.APIRoot, "/") || ep.Client == nil || ep.Namespace != host {
				t.Fatalf("%q: endpoint %+v", data, ep)
			}
		}
	})
}
