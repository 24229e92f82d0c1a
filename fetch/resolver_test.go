package fetch

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/internal/testenv"
)

func TestResolve(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := buildImage(t, "resolve", 1, linuxAMD64, false)
	pushImage(t, reg, "lib/r", "1", img)
	r, err := newResolver(registryOptions{HostsDir: t.TempDir(), PlainHTTP: true, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name, desc, err := r.Resolve(ctx, reg.Ref("lib/r", "1"))
	if err != nil || name != reg.Host+"/lib/r:1" || desc.Digest != img.Manifest.Digest || desc.Size != img.Manifest.Size {
		t.Fatalf("resolve: %s %+v %v", name, desc, err)
	}
	_, desc, err = r.Resolve(ctx, reg.Host+"/lib/r@"+img.Manifest.Digest.String())
	if err != nil || desc.MediaType != img.Manifest.MediaType {
		t.Fatalf("resolve by digest: %+v %v", desc, err)
	}
	_, _, err = r.Resolve(ctx, reg.Ref("lib/r", "2"))
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "manifest unknown") {
		t.Fatalf("unknown tag: %v", err)
	}
	reg.Stop()
	_, _, err = r.Resolve(ctx, reg.Ref("lib/r", "1"))
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("stopped: %v", err)
	}
}

func TestResolveTLSAuthMirror(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{TLS: true, Auth: true})
	img := buildImage(t, "rtls", 1, linuxAMD64, false)
	pushImage(t, reg, "sec/r", "1", img)
	ctx := context.Background()
	hosts := t.TempDir()
	writeHostsToml(t, hosts, reg.Host, "ca = \""+reg.CACertPath+"\"\n")
	resolve := func(opts registryOptions) error {
		r, err := newResolver(opts)
		if err != nil {
			t.Fatal(err)
		}
		_, desc, err := r.Resolve(ctx, reg.Ref("sec/r", "1"))
		if err == nil && desc.Digest != img.Manifest.Digest {
			t.Fatalf("digest %s", desc.Digest)
		}
		return err
	}
	if err := resolve(registryOptions{HostsDir: hosts, Username: reg.Username, Password: reg.Password}); err != nil {
		t.Fatal(err)
	}
	if err := resolve(registryOptions{HostsDir: t.TempDir(), Username: reg.Username, Password: reg.Password}); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("no CA: %v", err)
	}
	if err := resolve(registryOptions{HostsDir: hosts, Username: reg.Username, Password: "nope"}); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("wrong password: %v", err)
	}
	writeDockerConfig(t, reg.Host, reg.Username, reg.Password)
	if err := resolve(registryOptions{HostsDir: hosts}); err != nil {
		t.Fatalf("docker config.json: %v", err)
	}
	// A dead mirror first: the server answers.
	writeHostsToml(t, hosts, reg.Host, "ca = \""+reg.CACertPath+"\"\n[host.\"http://127.0.0.1:1\"]\n")
	if err := resolve(registryOptions{HostsDir: hosts}); err != nil {
		t.Fatalf("fallback past a dead mirror: %v", err)
	}
}
