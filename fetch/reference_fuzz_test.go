package fetch

import (
	"errors"
	"strings"
	"testing"

	"github.com/casfs/casfs/errdefs"
)

// FuzzParseReference: any string either parses into a complete, stable
// reference or fails as invalid input; it never panics.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"nginx", "nginx:alpine", "library/nginx:1.25", "docker.io/library/nginx:latest",
		"127.0.0.1:5000/lab/x:1", "localhost/x", "[::1]:5000/a/b:c",
		"ghcr.io/o/r@sha256:" + strings.Repeat("a", 64),
		"r:t@sha256:" + strings.Repeat("0", 64),
		"x@sha256:abc", "x@sha512:" + strings.Repeat("b", 128), "UPPER/case", "a//b", ":tag", "@sha256:",
		"a:" + strings.Repeat("t", 200), strings.Repeat("a/", 200) + "b", "a b", "a\x00b", "héllo:1", "-x", "x:",
		"example.com:99999/x", "example.com:/x", "../x", "./x:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReference(s)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("ParseReference(%q): %v is not ErrInvalidArgument", s, err)
			}
			return
		}
		if r.Name == "" || r.Host == "" || r.Repo == "" || (r.Tag == "" && r.Digest == "") {
			t.Fatalf("ParseReference(%q) = %+v: incomplete", s, r)
		}
		if r.Object() == "" {
			t.Fatalf("ParseReference(%q): empty Object", s)
		}
		if r.Digest != "" {
			if err := r.Digest.Validate(); err != nil {
				t.Fatalf("ParseReference(%q) kept invalid digest %q", s, r.Digest)
			}
		}
		// The normalised name is a fixed point.
		again, err := ParseReference(r.Name)
		if err != nil || again != r {
			t.Fatalf("ParseReference(%q) = %+v, but its Name parses to %+v, %v", s, r, again, err)
		}
	})
}
