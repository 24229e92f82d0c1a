package fusefs

import (
	"context"
	"math"
	"sort"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	digest "github.com/opencontainers/go-digest"
)

// The files of blobs/<alg>/ are served by rawFS like rootfs tree nodes,
// without a go-fuse Inode each: a store holds tens of thousands of blobs and
// an `ls -l blobs/sha256/` makes the kernel hold a node for every one. What
// the daemon keeps per blob the kernel holds is a blobNode (its digest, size
// and lookup count), dropped when the kernel forgets it. blobs/<alg>/ itself
// stays a bridge node (it is what live updates notify); rawFS answers its
// lookups and listings. An image's manifest.json, config.json and
// index.json stay bridge nodes: a few per image.

// blobNodeFlag marks node ids of blob files. It is the bit below
// treeNodeFlag: the bridge numbers its nodes from 1 upwards and never
// reaches it, and tree node ids have the top bit set.
const blobNodeFlag = 1 << 62

// blobNode is a blob file the kernel holds.
type blobNode struct {
	d    digest.Digest
	meta blobMeta
	refs uint64 // the kernel's lookups, given back by FORGET
}

// blobListing is an open blobs/<alg>/: the names of the view it was opened
// on, so that offsets stay valid while a refresh swaps the view.
type blobListing struct {
	alg   string
	names []string
}

func isBlobNode(id uint64) bool { return id&(treeNodeFlag|blobNodeFlag) == blobNodeFlag }

// blobNodeID is the node id of a blob: a hash of its digest in the blob
// range, probing on from there in the (2^-62) event that another digest
// the kernel holds has it. The caller holds blobsMu.
func (r *rawFS) blobNodeID(d digest.Digest) uint64 {
	id := blobNodeFlag | blobIno(d)&(blobNodeFlag-1)
	for {
		n := r.blobNodes[id]
		if n == nil || n.d == d {
			return id
		}
		id = blobNodeFlag | (id+1)&(blobNodeFlag-1)
	}
}

// blobNode returns the blob file the kernel knows as id.
func (r *rawFS) blobNode(id uint64) *blobNode {
	r.blobsMu.Lock()
	defer r.blobsMu.Unlock()
	return r.blobNodes[id]
}

// blobEntry fills a LOOKUP or READDIRPLUS reply for a blob and counts the
// kernel's new reference.
func (r *rawFS) blobEntry(d digest.Digest, meta blobMeta, out *fuse.EntryOut) {
	r.blobsMu.Lock()
	id := r.blobNodeID(d)
	n := r.blobNodes[id]
	if n == nil {
		n = &blobNode{d: d, meta: meta}
		r.blobNodes[id] = n
	}
	n.refs++
	r.blobsMu.Unlock()
	out.NodeId = id
	out.Generation = 0
	r.blobAttr(n, &out.Attr)
	imm := r.f.opts.ImmutableTimeout
	out.SetEntryTimeout(imm)
	out.SetAttrTimeout(imm)
}

func (r *rawFS) blobAttr(n *blobNode, a *fuse.Attr) {
	fileAttr(a, blobIno(n.d), r.f.blobMode(), n.meta.size, n.meta.modTime())
}

func (r *rawFS) forgetBlob(id, nlookup uint64) {
	r.blobsMu.Lock()
	defer r.blobsMu.Unlock()
	n := r.blobNodes[id]
	if n == nil {
		return
	}
	if n.refs <= nlookup {
		delete(r.blobNodes, id)
		if len(r.blobNodes) == 0 {
			r.blobNodes = map[uint64]*blobNode{} // a map never shrinks: give its table back
		}
		return
	}
	n.refs -= nlookup
}

// learnAlgDir notes the node id the bridge gave blobs/<alg>/ in a LOOKUP
// reply: rawFS answers lookups and listings under it. Listing blobs/ gives
// names only (see blobsDir), so a LOOKUP is the only way the kernel gets
// that id.
func (r *rawFS) learnAlgDir(name string, out *fuse.EntryOut) {
	if out.NodeId == 0 || out.Attr.Ino != ino("alg", name) {
		return
	}
	r.blobsMu.Lock()
	r.algNodes[name] = out.NodeId
	r.blobsMu.Unlock()
}

// algDir returns the algorithm whose blobs/<alg>/ the kernel knows as id.
func (r *rawFS) algDir(id uint64) (string, bool) {
	r.blobsMu.Lock()
	defer r.blobsMu.Unlock()
	for alg, n := range r.algNodes {
		if n == id {
			return alg, true
		}
	}
	return "", false
}

// lookupBlob answers blobs/<alg>/<name>.
func (r *rawFS) lookupBlob(ctx context.Context, alg, name string, out *fuse.EntryOut) fuse.Status {
	v, errno := r.f.view(ctx)
	if errno != 0 {
		return fuse.Status(errno)
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), name)
	if d.Validate() != nil {
		return r.negative(out)
	}
	meta, err := r.f.blobMeta(ctx, v, d)
	if err != nil {
		if errno := r.f.errno("blob info "+string(d), err); errno != syscall.ENOENT {
			return fuse.Status(errno)
		}
		return r.negative(out)
	}
	r.blobEntry(d, meta, out)
	return fuse.OK
}

// negative answers a lookup of a name that does not exist, letting the
// kernel cache that for the listing timeout (a refresh that adds the name
// drops it at once).
func (r *rawFS) negative(out *fuse.EntryOut) fuse.Status {
	out.NodeId = 0
	out.SetEntryTimeout(r.f.opts.ListingTimeout)
	return fuse.OK
}

func (r *rawFS) openBlobDir(ctx context.Context, alg string, out *fuse.OpenOut) fuse.Status {
	v, errno := r.f.view(ctx)
	if errno != 0 {
		return fuse.Status(errno)
	}
	l := &blobListing{alg: alg, names: v.blobNames(alg)}
	r.mu.Lock()
	r.nextFh++
	out.Fh = r.nextFh
	r.dirs[out.Fh] = l
	r.mu.Unlock()
	out.OpenFlags = dirFlags
	return fuse.OK
}

// readBlobDir lists blobs/<alg>/ from in.Offset, with attributes for
// READDIRPLUS: the names of the listing opened (in.Fh) or, when the kernel
// opens no directories, of the current view. Either way an entry's offset
// is the position of the next name in hex order (nameOffset), so a
// listing read across a refresh that adds or removes blobs neither repeats
// nor skips the names both views hold.
func (r *rawFS) readBlobDir(ctx context.Context, alg string, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	v, errno := r.f.view(ctx)
	if errno != 0 {
		return fuse.Status(errno)
	}
	var names []string
	if in.Fh != 0 {
		r.mu.Lock()
		l := r.dirs[in.Fh]
		r.mu.Unlock()
		if l == nil {
			return fuse.EBADF
		}
		names = l.names
	} else {
		names = v.blobNames(alg)
	}
	blobs := v.blobs[alg]
	dgst := func(k int) digest.Digest { return digest.NewDigestFromEncoded(digest.Algorithm(alg), names[k]) }
	from := sort.Search(len(names), func(k int) bool { return nameOffset(names[k]) >= in.Offset })
	fillListing(out, from, len(names), plus, func(k int) fuse.DirEntry {
		off := uint64(math.MaxUint64) // the end
		if k+1 < len(names) {
			off = nameOffset(names[k+1])
		}
		return fuse.DirEntry{Name: names[k], Mode: syscall.S_IFREG, Ino: blobIno(dgst(k)), Off: off}
	}, func(k int, eo *fuse.EntryOut) {
		// A blob gone since the listing was opened keeps node id 0: the
		// kernel skips it and looks the name up if someone asks.
		if meta, ok := blobs[names[k]]; ok {
			r.blobEntry(dgst(k), meta, eo)
		}
	})
	return fuse.OK
}

// nameOffset is the directory offset that resumes a blob listing at name:
// its first 15 hex digits plus one (0 is the start, MaxUint64 the end), so
// it grows with the names' order. Names sharing 15 digits resume at the
// first of them, which may list one twice; a non-hex digit counts as 0.
func nameOffset(name string) uint64 {
	var o uint64
	for i := 0; i < 15; i++ {
		o <<= 4
		if i < len(name) {
			if c := name[i]; c >= '0' && c <= '9' {
				o |= uint64(c - '0')
			} else if c >= 'a' && c <= 'f' {
				o |= uint64(c-'a') + 10
			}
		}
	}
	return o + 1
}

func (r *rawFS) releaseBlobDir(fh uint64) {
	r.mu.Lock()
	delete(r.dirs, fh)
	r.mu.Unlock()
}

// blobNames returns the sorted names of blobs/<alg>/, computed once per
// view.
func (v *view) blobNames(alg string) []string {
	v.namesMu.Lock()
	defer v.namesMu.Unlock()
	if names, ok := v.sortedBlobs[alg]; ok {
		return names
	}
	m := v.blobs[alg]
	names := make([]string, 0, len(m))
	for hex := range m {
		names = append(names, hex)
	}
	sort.Strings(names)
	if v.sortedBlobs == nil {
		v.sortedBlobs = map[string][]string{}
	}
	v.sortedBlobs[alg] = names
	return names
}
