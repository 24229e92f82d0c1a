package fusefs

import (
	"syscall"

	gfs "github.com/hanwen/go-fuse/v2/fs"
)

// notify tells the kernel which names changed between two views, so that
// its dentry and readdir caches drop them: removed names disappear and added
// names (possibly cached as negative entries) are looked up again, at once.
// Only directories the kernel has looked up (those with an Inode) can hold
// cached state, so unknown subtrees are skipped. No lock is held here: the
// kernel may wait on a directory lock that a running request holds.
func (f *FS) notify(old, nv *view) {
	root := f.root.EmbeddedInode()

	if blobs := root.GetChild(nameBlobs); blobs != nil {
		changed := false
		for _, alg := range union(old.blobs, nv.blobs) {
			o, n := old.blobs[alg], nv.blobs[alg]
			if (o == nil) != (n == nil) {
				f.notifyEntry(blobs, alg)
				changed = true
				continue
			}
			if dir := blobs.GetChild(alg); dir != nil {
				notifyNames(f, dir, o, n)
			}
		}
		if changed {
			f.notifyDir(blobs)
		}
	}
	if rootfs := root.GetChild(nameRootfs); rootfs != nil {
		notifyNames(f, rootfs, old.rootfs, nv.rootfs)
	}
	if images := root.GetChild(nameImages); images != nil {
		f.notifyImages(images, old.images, nv.images)
	}
}

func union[V any](a, b map[string]V) []string {
	seen := map[string]V{}
	for k, v := range a {
		seen[k] = v
	}
	for k, v := range b {
		seen[k] = v
	}
	return sortedKeys(seen)
}

// notifyNames invalidates the names present in only one of two listings
// (blobs and rootfs ids never change under one name).
func notifyNames[V any](f *FS, dir *gfs.Inode, old, nv map[string]V) {
	changed := false
	for k := range old {
		if _, ok := nv[k]; !ok {
			f.notifyEntry(dir, k)
			changed = true
		}
	}
	for k := range nv {
		if _, ok := old[k]; !ok {
			f.notifyEntry(dir, k)
			changed = true
		}
	}
	if changed {
		f.notifyDir(dir)
	}
}

// notifyImages walks two images/ tries side by side. A directory whose image
// changed (retag, re-pull) gets a new inode identity, so invalidating its
// name in the parent is enough for everything below it.
func (f *FS) notifyImages(dir *gfs.Inode, old, nv *imgDir) {
	changed := false
	for _, name := range union(old.kids, nv.kids) {
		o, n := old.kids[name], nv.kids[name]
		if o == nil || n == nil || !sameImage(o.image, n.image) {
			f.notifyEntry(dir, name)
			changed = true
			continue
		}
		if c := dir.GetChild(name); c != nil {
			f.notifyImages(c, o, n)
		}
	}
	if changed {
		f.notifyDir(dir)
	}
}

func (f *FS) notifyEntry(dir *gfs.Inode, name string) {
	// ENOENT means the kernel had nothing cached: fine.
	if errno := dir.NotifyEntry(name); errno != 0 && errno != syscall.ENOENT {
		f.log.Debug("fuse: entry notify failed", "name", name, "err", errno)
	}
}

// notifyDir drops a directory's cached listing (FOPEN_CACHE_DIR keeps it in
// the directory's page cache) and attributes.
func (f *FS) notifyDir(dir *gfs.Inode) {
	if errno := dir.NotifyContent(0, 0); errno != 0 && errno != syscall.ENOENT {
		f.log.Debug("fuse: inode notify failed", "err", errno)
	}
}
