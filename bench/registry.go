package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// registry is a docker-registry (distribution v2.8) serving plain HTTP on a
// free 127.0.0.1 port, with filesystem storage in the bench's scratch space.
type registry struct {
	host string // 127.0.0.1:PORT
	dir  string
	cmd  *exec.Cmd
	done <-chan struct{}
}

func startRegistry(work string) (*registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &registry{host: "127.0.0.1:" + strconv.Itoa(port), dir: filepath.Join(work, "registry")}
	if err := os.MkdirAll(filepath.Join(r.dir, "storage"), 0o755); err != nil {
		return nil, err
	}
	q := strconv.Quote
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"+
		"storage:\n  filesystem:\n    rootdirectory: %s\n  maintenance:\n    uploadpurging:\n      enabled: false\n"+
		"http:\n  addr: %s\n", q(filepath.Join(r.dir, "storage")), q(r.host))
	cfgPath := filepath.Join(r.dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(r.dir, "registry.log")
	r.cmd, r.done, err = startDaemon(logPath, "docker-registry", "serve", cfgPath)
	if err != nil {
		return nil, fmt.Errorf("start docker-registry: %w", err)
	}
	atExit(r.stop)
	err = waitFor(20*time.Second, "registry", func() bool {
		if exited(r.done) {
			return true
		}
		resp, err := http.Get("http://" + r.host + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err == nil && exited(r.done) {
		err = fmt.Errorf("registry exited: %s", tail(logPath))
	}
	return r, err
}

func (r *registry) stop() { stopGroup(r.cmd, r.done, 5*time.Second) }

func (r *registry) ref(repo, tag string) string { return r.host + "/" + repo + ":" + tag }

// push uploads an image's blobs (monolithic uploads streamed from their
// files, skipping blobs the repository has) and then its manifest.
func (r *registry) push(repo, tag string, img *image) error {
	base := "http://" + r.host + "/v2/" + repo
	client := &http.Client{Timeout: 10 * time.Minute}
	for _, b := range append([]blob{img.config}, img.layers...) {
		resp, err := client.Head(base + "/blobs/" + b.digest.String())
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			continue
		}
		resp, err = client.Post(base+"/blobs/uploads/", "", nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("start upload of %s: %s", b.digest, resp.Status)
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			return err
		}
		u, _ := url.Parse(base)
		u = u.ResolveReference(loc)
		qs := u.Query()
		qs.Set("digest", b.digest.String())
		u.RawQuery = qs.Encode()
		f, err := os.Open(b.path)
		if err != nil {
			return err
		}
		req, _ := http.NewRequest(http.MethodPut, u.String(), f)
		req.ContentLength = b.size
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = client.Do(req)
		f.Close()
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("upload %s: %s", b.digest, resp.Status)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, base+"/manifests/"+tag, bytes.NewReader(img.manifest))
	req.Header.Set("Content-Type", img.manifestType)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("push manifest %s:%s: %s", repo, tag, resp.Status)
	}
	return nil
}
