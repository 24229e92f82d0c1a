package layers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/errdefs"
)

// TestUnpackLimitsKeepNothing unpacks a gzip bomb (a small blob of one
// file of zeros) and a layer of many empty files through the snapshotter
// with low limits: each fails naming its limit, and no snapshot, active or
// committed, nor any snapshot directory is left.
func TestUnpackLimitsKeepNothing(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	// Each limit is set a few times below what its layer holds, so each
	// trips on the way through the layer as it would on a real bomb; the
	// sizes stay small enough that the unlimited unpack below is quick
	// under the race detector.
	bombTar := mkTar(t, tFile("zeros", 0o644, string(make([]byte, 8<<20))))
	bomb := gz(t, bombTar)
	if len(bomb) > 64<<10 {
		t.Fatalf("bomb blob is %d bytes, not small", len(bomb))
	}
	var many []tent
	for i := 0; i < 400; i++ {
		many = append(many, tFile(fmt.Sprintf("d%d/f%d", i%10, i), 0o644, ""))
	}
	manyTar := mkTar(t, many...)
	manyBlob := gz(t, manyTar)
	cases := []struct {
		name   string
		tar    []byte
		blob   []byte
		limits ApplyOptions
		text   string
	}{
		{"bytes per layer", bombTar, bomb, ApplyOptions{MaxBytes: 2 << 20}, "layer exceeds the limit of 2097152 unpacked bytes"},
		{"bytes per image", bombTar, bomb, ApplyOptions{MaxImageBytes: 1 << 20}, "image exceeds the limit of 1048576 unpacked bytes"},
		{"ratio past its floor", bombTar, bomb, ApplyOptions{MaxRatio: 10, ratioFloor: 256 << 10}, "layer unpacks to more than 10 times its compressed size past 262144 bytes"},
		{"entries per layer", manyTar, manyBlob, ApplyOptions{MaxEntries: 100}, "layer exceeds the limit of 100 entries"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, root := newSnapshotter(t)
			s.Limits = tc.limits
			ctx := s.Limits.ImageContext(context.Background())
			blob, diffID := tc.blob, sha256Digest(tc.tar)
			_, err := s.Unpack(ctx, "sha256:"+strings.Repeat("a", 64), "", bytes.NewReader(blob), ocispec.MediaTypeImageLayerGzip, diffID)
			if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %v, want %q (failed precondition)", err, tc.text)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			recs, err := s.list(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 0 || len(snapshotDirs(t, root)) != 0 {
				t.Errorf("left %d snapshot records and dirs %v", len(recs), snapshotDirs(t, root))
			}
			// Without the limit the same layer unpacks.
			s.Limits = ApplyOptions{}
			if _, err := s.Unpack(s.Limits.ImageContext(context.Background()), "sha256:"+strings.Repeat("a", 64), "", bytes.NewReader(blob), ocispec.MediaTypeImageLayerGzip, diffID); err != nil {
				t.Fatalf("default limits: %v", err)
			}
		})
	}
}

// TestImageBudgetSpansLayers checks that the image budget adds up the
// layers applied under one ImageContext, that a failed layer does not
// count, and that a new context starts afresh.
func TestImageBudgetSpansLayers(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	layer := mkTar(t, tFile("f", 0o644, string(make([]byte, 600<<10))))
	opts := ApplyOptions{MaxImageBytes: 1 << 20}
	ctx := opts.ImageContext(context.Background())
	if _, err := Apply(ctx, t.TempDir(), bytes.NewReader(layer), opts); err != nil {
		t.Fatalf("first layer: %v", err)
	}
	_, err := Apply(ctx, t.TempDir(), bytes.NewReader(layer), opts)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "image exceeds the limit of 1048576 unpacked bytes") {
		t.Fatalf("second layer: got %v", err)
	}
	// A failed layer gives its bytes back: a small layer still fits.
	small := mkTar(t, tFile("g", 0o644, string(make([]byte, 200<<10))))
	if _, err := Apply(ctx, t.TempDir(), bytes.NewReader(small), opts); err != nil {
		t.Fatalf("small layer after a failed one: %v", err)
	}
	if _, err := Apply(opts.ImageContext(context.Background()), t.TempDir(), bytes.NewReader(layer), opts); err != nil {
		t.Fatalf("another image: %v", err)
	}
}
