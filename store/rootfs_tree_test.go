package store

import (
	"context"
	"testing"
	"time"

	"github.com/casfs/casfs/internal/testenv"
	"github.com/casfs/casfs/internal/testimage"
	"github.com/casfs/casfs/layers/merged"
)

// A lazy pull in the mount daemon builds the new image's rootfs tree while
// it stores its TOCs; the mount's first lookup gets that tree, the same as
// one built from the layers, and later lookups build their own.
func TestLazyPullBuildsTreeAhead(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := estargzImage(t, "base", "top")
	ctx := context.Background()
	if err := testimage.Push(ctx, reg.URL, "lab/ahead", "1", img.Blobs, img.Manifest, reg.Client()); err != nil {
		t.Fatal(err)
	}
	s := openTemp(t)
	ro := RegistryOptions{PlainHTTP: true, HostsDir: t.TempDir()}
	s.EnableLazyFetch(ro, time.Minute)
	if _, err := s.Pull(ctx, reg.Host+"/lab/ahead:1", PullOptions{RegistryOptions: ro, Lazy: true, NoComplete: true}); err != nil {
		t.Fatal(err)
	}
	views, err := s.ImageViews(ctx)
	if err != nil || len(views) != 1 {
		t.Fatalf("views %v, %v", views, err)
	}
	id := views[0].Layers.RootfsID()
	s.pre.mu.Lock()
	p := s.pre.tree
	s.pre.mu.Unlock()
	if p == nil || p.id != id {
		t.Fatalf("no tree built ahead for rootfs %s: %+v", id, p)
	}
	ahead, err := s.RootfsTree(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if ahead != p.tree {
		t.Fatal("the first RootfsTree did not hand over the tree built ahead")
	}
	again, err := s.RootfsTree(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if again == ahead {
		t.Fatal("the tree built ahead was handed over twice")
	}
	if ahead.Len() != again.Len() || ahead.Len() < 4 {
		t.Fatalf("tree built ahead has %d nodes, built again %d", ahead.Len(), again.Len())
	}
	for i := 1; i <= ahead.Len(); i++ {
		a, b := ahead.Attr(merged.Ino(i)), again.Attr(merged.Ino(i))
		if a != b {
			t.Errorf("node %d: built ahead %+v, built again %+v", i, a, b)
		}
	}
}
