package store

import (
	"errors"
	"testing"

	"github.com/casfs/casfs/errdefs"
)

func TestCheckLabels(t *testing.T) {
	for _, ok := range []map[string]string{nil, {"a": ""}, {"k.io/x": "v with spaces, ünïcode"}} {
		if err := checkLabels(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []map[string]string{
		{"": "v"},
		{"k": "line\nsha256:fake 1 B"},
		{"k": "tab\there"},
		{"k\r": "v"},
		{"k": "esc\x1b[31m"},
		{"k": "del\x7f"},
	} {
		if err := checkLabels(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q: %v, want invalid argument", bad, err)
		}
	}
}
