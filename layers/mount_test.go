package layers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casfs/casfs/errdefs"
)

func TestMountAt(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		name   string
		layers int
		dir    func(i int) string
	}{
		{"one layer is a read-only bind", 1, func(i int) string { return fmt.Sprint(i) }},
		{"names with separators", 3, func(i int) string { return fmt.Sprintf("a:b,c\\d %d", i) }},
		{"options longer than a page", 40, func(i int) string { return fmt.Sprintf("%03d-%s", i, strings.Repeat("l", 120)) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			var lowers []string // top-most first
			for i := tc.layers - 1; i >= 0; i-- {
				d := filepath.Join(base, tc.dir(i))
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(d, "top"), []byte(fmt.Sprint(i)), 0o644); err != nil {
					t.Fatal(err)
				}
				lowers = append(lowers, d)
			}
			if tc.layers == 40 && len(strings.Join(lowers, ":")) < os.Getpagesize() {
				t.Fatal("options fit in a page")
			}
			mnt := t.TempDir()
			if err := mountPath(mnt, lowers, "", "", true); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := Unmount(mnt); err != nil {
					t.Error(err)
				}
			}()
			for i := 0; i < tc.layers; i++ {
				if _, err := os.Stat(filepath.Join(mnt, fmt.Sprintf("f%d", i))); err != nil {
					t.Errorf("file of layer %d: %v", i, err)
				}
			}
			if b, err := os.ReadFile(filepath.Join(mnt, "top")); err != nil || string(b) != fmt.Sprint(tc.layers-1) {
				t.Errorf("top-most layer does not win: %q %v", b, err)
			}
			if err := os.WriteFile(filepath.Join(mnt, "w"), nil, 0o644); err == nil {
				t.Error("read-only mount is writable")
			}
		})
	}
	if err := mountPath(t.TempDir(), nil, "", "", true); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("no lowers: %v", err)
	}
	if err := mountPath(t.TempDir(), []string{"/a", "/b"}, "", "", false); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("writable without upper: %v", err)
	}
	if err := Unmount(t.TempDir()); err == nil {
		t.Error("unmount of a plain dir succeeded")
	}
}
