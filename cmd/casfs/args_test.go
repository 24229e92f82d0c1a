package main

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestInterleaveFlags(t *testing.T) {
	app := newApp(nil, &bytes.Buffer{}, &bytes.Buffer{})
	for _, tc := range []struct{ in, want string }{
		{"casfs image pull REF --plain-http", "casfs image pull --plain-http REF"},
		{"casfs --root /r image pull REF --platform linux/arm64 -q", "casfs --root /r image pull --platform linux/arm64 -q REF"},
		{"casfs image export f.tar REF --all-platforms", "casfs image export --all-platforms f.tar REF"},
		{"casfs image rm A B -f", "casfs image rm -f A B"},
		{"casfs i rm A --", "casfs i rm A --"},
		{"casfs content ingest r -- --not-a-flag", "casfs content ingest r -- --not-a-flag"},
		{"casfs content export - --bogus x", "casfs content export --bogus - x"},
		{"casfs image pull --platform=linux/amd64 REF", "casfs image pull --platform=linux/amd64 REF"},
		{"casfs image", "casfs image"},
		{"casfs frobnicate a --x", "casfs frobnicate a --x"},
		{"casfs image pull --generate-bash-completion", "casfs image pull --generate-bash-completion"},
	} {
		got := strings.Join(interleaveFlags(strings.Fields(tc.in), app), " ")
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestHelpAsFlag(t *testing.T) {
	app := newApp(nil, &bytes.Buffer{}, &bytes.Buffer{})
	for in, want := range map[string]string{
		"casfs help image":                "casfs image --help",
		"casfs --root /r help image pull": "casfs --root /r image pull --help",
		"casfs help":                      "casfs help",
		"casfs image pull help":           "casfs image pull help",
		"casfs --log-level debug help gc": "casfs --log-level debug gc --help",
	} {
		if got := strings.Join(helpAsFlag(strings.Fields(in), app), " "); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestMountHelperShape(t *testing.T) {
	app := newApp(nil, &bytes.Buffer{}, &bytes.Buffer{})
	storeRoot := t.TempDir()
	if err := os.Mkdir(storeRoot+"/meta", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args string
		want bool
	}{
		{"casfs /var/lib/casfs /mnt/cas -o rw,dev,suid", true},
		{"casfs /var/lib/casfs /mnt/cas -orw", true},
		{"casfs " + storeRoot + " /mnt/cas", true},
		{"casfs pull busybox", false},
		{"casfs imgae /mnt/x", false},
		{"casfs images ls", false},
		{"casfs image ls", false},
		{"casfs foo bar", false},
		{"casfs help image", false},
		{"casfs completion bash", false},
		{"casfs " + storeRoot + " /mnt/cas --generate-bash-completion", false},
		{"casfs --root /r image", false},
	} {
		if got := isMountHelperCall(strings.Fields(tc.args), app.Commands); got != tc.want {
			t.Errorf("%q: mount helper = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestAliases(t *testing.T) {
	app := newApp(nil, &bytes.Buffer{}, &bytes.Buffer{})
	img := findCommand(app.Commands, "images")
	if img == nil || img.Name != "image" || findCommand(app.Commands, "i") != img {
		t.Fatalf("images and i are not aliases of image")
	}
	for _, name := range []string{"list", "ls"} {
		if c := findCommand(img.Subcommands, name); c == nil || c.Name != "ls" {
			t.Errorf("image %s is not image ls", name)
		}
	}
	for _, name := range []string{"remove", "del", "rm"} {
		if c := findCommand(img.Subcommands, name); c == nil || c.Name != "rm" {
			t.Errorf("image %s is not image rm", name)
		}
	}
	lease := findCommand(app.Commands, "lease")
	if rm := findCommand(lease.Subcommands, "rm"); rm == nil || !reflect.DeepEqual(dedup(rm.Aliases), rm.Aliases) {
		t.Errorf("lease rm aliases repeat: %v", rm.Aliases)
	}
}

func dedup(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{"1": 1, "512": 512, "64K": 64 << 10, "100m": 100 << 20, "32G": 32 << 30, "32GiB": 32 << 30, "2TB": 2 << 40, "1P": 1 << 50}
	for in, want := range good {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "G", "1.5G", "12X", "99999999999P"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}
