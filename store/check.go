package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/casfs/casfs/cas"
	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/index"
	"github.com/casfs/casfs/layers"
	"github.com/casfs/casfs/oci"
)

// StoreCheckOptions control Check (casfs check); CheckOptions are image check's.
type StoreCheckOptions struct {
	// Repair fixes what can be fixed without losing data.
	Repair bool `json:"repair,omitempty"`
	// RegistryOptions reach registries to fetch corrupt blobs again.
	RegistryOptions
}

// CheckFinding is one line of a check: Kind is blob, file, image, snapshot,
// ingest or mount; Name names the thing; Detail says what is wrong, what
// was done, or (for notes) why it is fine.
type CheckFinding struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Detail string `json:"detail"`
}

func (f CheckFinding) String() string { return f.Kind + " " + f.Name + ": " + f.Detail }

// CheckCounts says how much a check looked at.
type CheckCounts struct {
	Blobs     int `json:"blobs"`     // blob records
	Files     int `json:"files"`     // blob files
	Images    int `json:"images"`    // image records
	Snapshots int `json:"snapshots"` // snapshot records
	Ingests   int `json:"ingests"`   // ingest folders
	Mounts    int `json:"mounts"`    // mounts of this root looked at
}

// StoreCheckReport is the outcome of Check. Problems are what is wrong and
// (after a repair) still is; Repaired is what was fixed, one line each;
// Notes are states that are fine by design (lazy blobs, resumable ingests,
// work in progress).
type StoreCheckReport struct {
	Checked  CheckCounts    `json:"checked"`
	Problems []CheckFinding `json:"problems,omitempty"`
	Repaired []CheckFinding `json:"repaired,omitempty"`
	Notes    []CheckFinding `json:"notes,omitempty"`
}

// Checker verifies the whole store (casfs check).
type Checker interface {
	// Check verifies every blob's bytes, records against files, images
	// against the blobs they need, snapshots against their records and
	// parents, ingests and mounts. The error is for failing to check at all.
	Check(ctx context.Context, opts StoreCheckOptions) (StoreCheckReport, error)
}

// staleIngestAge is how long an ingest nobody holds may sit unchanged
// before it counts as abandoned rather than resumable.
const staleIngestAge = time.Hour

// processStart separates what this process may be doing right now from
// what an earlier process left: the index has one owner at a time, so a
// half-made thing older than this process can have nobody working on it.
var processStart = time.Now()

// checker carries one run of Check.
type checker struct {
	s    *Local
	db   *index.DB
	opts StoreCheckOptions
	rep  StoreCheckReport
	// needed maps each blob an image reaches to one image that needs it.
	needed  map[digest.Digest]string
	changed bool
}

func (c *checker) problem(kind, name, format string, a ...any) {
	c.rep.Problems = append(c.rep.Problems, CheckFinding{kind, name, fmt.Sprintf(format, a...)})
}

func (c *checker) repaired(kind, name, format string, a ...any) {
	c.changed = true
	f := CheckFinding{kind, name, fmt.Sprintf(format, a...)}
	slog.Info("check repaired", "finding", f.String())
	c.rep.Repaired = append(c.rep.Repaired, f)
}

func (c *checker) note(kind, name, format string, a ...any) {
	c.rep.Notes = append(c.rep.Notes, CheckFinding{kind, name, fmt.Sprintf(format, a...)})
}

// Check implements Checker.
func (s *Local) Check(ctx context.Context, opts StoreCheckOptions) (StoreCheckReport, error) {
	db, err := s.Index()
	if err != nil {
		return StoreCheckReport{}, err
	}
	c := &checker{s: s, db: db, opts: opts, needed: map[digest.Digest]string{}}
	defer func() {
		if c.changed {
			s.changed()
		}
	}()
	steps := []func(context.Context) error{c.images, c.blobs, c.snapshots, c.ingests, c.mounts, c.leases, c.lazyCaches}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return c.rep, err
		}
		if err := ctx.Err(); err != nil {
			return c.rep, err
		}
	}
	return c.rep, nil
}

// images walks every image record down to its layers, filling c.needed and
// reporting blobs an image needs that the store neither has nor knows.
func (c *checker) images(ctx context.Context) error {
	var imgs []index.Image
	err := c.db.Images().List(ctx, "", func(_ string, img index.Image) error {
		imgs = append(imgs, img)
		return nil
	})
	if err != nil {
		return fmt.Errorf("check: list images: %w", err)
	}
	c.rep.Checked.Images = len(imgs)
	for _, img := range imgs {
		c.walkImage(ctx, img.Name, img.Target, true, index.Blob{})
	}
	return nil
}

// walkImage marks d and what it reaches as needed by name. required is
// false for the platform manifests of an index, which may not have been
// pulled. parent is the record of the document that names d (zero for an
// image's target): a blob removed with its record inherits its sources.
func (c *checker) walkImage(ctx context.Context, name string, d ocispec.Descriptor, required bool, parent index.Blob) {
	if _, seen := c.needed[d.Digest]; seen {
		return
	}
	known := c.known(ctx, d.Digest)
	if !known && !required {
		return
	}
	c.needed[d.Digest] = name
	if !known && !c.restore(ctx, name, d, parent) {
		return
	}
	rec, _ := c.db.Blobs().Get(ctx, d.Digest.String())
	if !oci.IsIndex(d.MediaType) && !oci.IsManifest(d.MediaType) {
		return
	}
	data, err := c.s.readDocument(ctx, d.Digest, nil)
	if err != nil {
		return // not local (lazy) or corrupt: the blob pass says which
	}
	doc, err := oci.Parse(d, data)
	if err != nil {
		return
	}
	// A manifest needs all its parts; an index may name platforms that
	// were never pulled.
	for _, p := range doc.Parts() {
		c.walkImage(ctx, name, p, doc.Manifest != nil, rec)
	}
}

// restore handles a blob an image needs that is neither stored nor
// recorded (removed with content rm --force): with --repair it is recorded
// with the sources of the document that names it and fetched again;
// otherwise the problem says what will restore it. It reports whether the
// blob is back.
func (c *checker) restore(ctx context.Context, name string, d ocispec.Descriptor, parent index.Blob) bool {
	if !hasSource(parent) {
		c.problem("image", name, "needs blob %s, which is neither stored nor recorded, and no registry source is known (casfs image pull %s restores it)", d.Digest, name)
		return false
	}
	if !c.opts.Repair {
		c.problem("image", name, "needs blob %s, which is neither stored nor recorded (--repair fetches it from its registry)", d.Digest)
		return false
	}
	now := time.Now().UTC()
	rec := index.Blob{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType, CreatedAt: now, UpdatedAt: now, Labels: map[string]string{}}
	for k, v := range parent.Labels {
		if strings.HasPrefix(k, labelSourcePrefix) {
			rec.Labels[k] = v
		}
	}
	if err := c.db.Blobs().Create(ctx, d.Digest.String(), rec); err != nil && !errors.Is(err, errdefs.ErrExists) {
		c.problem("image", name, "needs blob %s, which is neither stored nor recorded; recording it failed: %v", d.Digest, err)
		return false
	}
	c.changed = true
	if err := c.s.fetchMissing(ctx, c.opts.RegistryOptions, d.Digest, nil); err != nil {
		c.problem("image", name, "needs blob %s, which was neither stored nor recorded; fetching it from its registry failed (it stays recorded as not local): %v", d.Digest, err)
		return false
	}
	c.repaired("blob", d.Digest.String(), "fetched again from its registry (image %s needs it)", name)
	return true
}

// known: the blob has a record or a file.
func (c *checker) known(ctx context.Context, d digest.Digest) bool {
	if _, err := c.db.Blobs().Get(ctx, d.String()); err == nil {
		return true
	}
	_, err := c.s.blobs.Info(ctx, d)
	return err == nil
}

func hasSource(b index.Blob) bool {
	return len(sourcesOf(b)) > 0
}

// blobs checks every record against its file and every file's bytes.
func (c *checker) blobs(ctx context.Context) error {
	records := map[digest.Digest]index.Blob{}
	err := c.db.Blobs().List(ctx, "", func(_ string, b index.Blob) error {
		records[b.Digest] = b
		return nil
	})
	if err != nil {
		return fmt.Errorf("check: list blob records: %w", err)
	}
	c.rep.Checked.Blobs = len(records)
	files := map[digest.Digest]cas.Info{}
	err = c.s.blobs.Walk(ctx, func(fi cas.Info) error {
		files[fi.Digest] = fi
		return nil
	})
	if err != nil {
		return fmt.Errorf("check: list blob files: %w", err)
	}
	c.rep.Checked.Files = len(files)

	for _, d := range sortedKeys(records) {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := records[d]
		if fi, ok := files[d]; ok {
			c.checkFile(ctx, b, fi)
		} else {
			c.missingFile(ctx, b)
		}
	}
	for _, d := range sortedKeys(files) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, ok := records[d]; !ok {
			c.unrecordedFile(ctx, files[d])
		}
	}
	return nil
}

func sortedKeys[V any](m map[digest.Digest]V) []digest.Digest {
	out := make([]digest.Digest, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (c *checker) neededBy(d digest.Digest) string {
	if name, ok := c.needed[d]; ok {
		return "; image " + name + " needs it"
	}
	return ""
}

// checkFile re-hashes a recorded blob's file.
func (c *checker) checkFile(ctx context.Context, b index.Blob, fi cas.Info) {
	d := b.Digest.String()
	err := c.s.blobs.Verify(ctx, b.Digest)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return // removed while we looked (content rm, prune)
	case errors.Is(err, errdefs.ErrDigestMismatch):
		c.corrupt(ctx, b)
		return
	case err != nil:
		c.problem("blob", d, "cannot verify: %v", err)
		return
	}
	if b.Size != fi.Size {
		if !c.opts.Repair {
			c.problem("blob", d, "record says %d bytes but the file (which matches its digest) has %d", b.Size, fi.Size)
			return
		}
		_, err := c.db.Blobs().Update(ctx, d, func(r *index.Blob) error { r.Size = fi.Size; return nil })
		if err != nil {
			c.problem("blob", d, "record says %d bytes but the file has %d; fixing the record failed: %v", b.Size, fi.Size, err)
			return
		}
		c.repaired("blob", d, "set the record's size to the file's %d bytes (it said %d)", fi.Size, b.Size)
	}
}

// corrupt handles a recorded blob whose bytes no longer match its digest.
func (c *checker) corrupt(ctx context.Context, b index.Blob) {
	d := b.Digest.String()
	src := hasSource(b)
	_, isNeeded := c.needed[b.Digest]
	switch {
	case !c.opts.Repair && src:
		c.problem("blob", d, "content does not match its digest (--repair fetches it again)")
		return
	case !c.opts.Repair && !isNeeded:
		c.problem("blob", d, "content does not match its digest (no image needs it; --repair removes it)")
		return
	case !src && isNeeded:
		c.problem("blob", d, "content does not match its digest, cannot re-fetch: no registry source recorded%s", c.neededBy(b.Digest))
		return
	}
	if err := c.s.blobs.Delete(ctx, b.Digest); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		c.problem("blob", d, "content does not match its digest; removing the file failed: %v", err)
		return
	}
	c.changed = true
	if !src {
		if err := c.db.Blobs().Delete(ctx, d); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			c.problem("blob", d, "removed its corrupt file, but dropping the record failed: %v", err)
			return
		}
		c.repaired("blob", d, "removed the corrupt blob (no image needed it and no registry source is recorded)")
		return
	}
	if err := c.s.fetchMissing(ctx, c.opts.RegistryOptions, b.Digest, nil); err != nil {
		c.problem("blob", d, "removed its corrupt file, but fetching it again failed (it stays recorded as not local): %v", err)
		return
	}
	c.repaired("blob", d, "replaced the corrupt file with a fresh copy from its registry")
}

// missingFile handles a record without a file.
func (c *checker) missingFile(ctx context.Context, b index.Blob) {
	d := b.Digest.String()
	if hasSource(b) {
		c.note("blob", d, "not local (lazy): fetched from its registry on first read")
		return
	}
	if _, isNeeded := c.needed[b.Digest]; isNeeded {
		c.problem("blob", d, "recorded but its file is missing and no registry source is recorded%s", c.neededBy(b.Digest))
		return
	}
	if !c.opts.Repair {
		c.problem("blob", d, "recorded but its file is missing (no image needs it; --repair drops the record)")
		return
	}
	if _, err := c.s.blobs.Info(ctx, b.Digest); err == nil {
		return // committed while we looked
	}
	if err := c.db.Blobs().Delete(ctx, d); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		c.problem("blob", d, "recorded but its file is missing; dropping the record failed: %v", err)
		return
	}
	c.repaired("blob", d, "dropped the record of a missing blob that no image needs")
}

// unrecordedFile handles a blob file the index does not know: a commit
// whose record was not written yet (in flight, or the writer died).
func (c *checker) unrecordedFile(ctx context.Context, fi cas.Info) {
	d := fi.Digest.String()
	if !fi.CreatedAt.Before(processStart) {
		// This process may be between commit and record right now.
		if _, err := c.db.Blobs().Get(ctx, d); err == nil {
			return
		}
	}
	err := c.s.blobs.Verify(ctx, fi.Digest)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return
	case errors.Is(err, errdefs.ErrDigestMismatch):
		if !c.opts.Repair {
			c.problem("file", d, "file without a record does not match its digest (--repair removes it)")
			return
		}
		if err := c.s.blobs.Delete(ctx, fi.Digest); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			c.problem("file", d, "file without a record does not match its digest; removing it failed: %v", err)
			return
		}
		c.repaired("file", d, "removed a corrupt file that had no record")
		return
	case err != nil:
		c.problem("file", d, "cannot verify: %v", err)
		return
	}
	if !c.opts.Repair {
		// Complete and valid content: the next ingest of it, content
		// verify or --repair records it, and gc removes it as garbage.
		c.note("file", d, "valid but not recorded (an ingest died before recording it, or a gc before deleting it; gc removes it, --repair records it)")
		return
	}
	if _, err := c.s.record(ctx, c.db, fi.Digest, ""); err != nil {
		c.problem("file", d, "valid file without a record; recording it failed: %v", err)
		return
	}
	c.repaired("file", d, "recorded a valid file that had no record")
}

// snapshots checks snapshot records against their directories and parents.
func (c *checker) snapshots(ctx context.Context) error {
	// Opening the snapshotter removes what a crash left half-made; say so.
	before, beforeDirs, err := c.scanSnapshots(ctx)
	if err != nil {
		return err
	}
	sn, err := c.s.Snapshotter()
	if err != nil {
		return err
	}
	for _, f := range c.s.takeRepairs() {
		c.repaired(f.Kind, f.Name, "%s", f.Detail)
	}
	recs, dirs, err := c.scanSnapshots(ctx)
	if err != nil {
		return err
	}
	for key, r := range before {
		if _, still := recs[key]; !still && r.Labels[layers.LabelExtracting] != "" && r.CreatedAt.Before(processStart) {
			c.repaired("snapshot", key, "removed a snapshot left half-extracted by a crash (done whenever the store is opened)")
		}
	}
	for id, mt := range beforeDirs {
		if _, still := dirs[id]; !still && mt.Before(processStart) && !recordsID(before, id) {
			c.repaired("snapshot", "dir "+id, "removed a snapshot directory without a record (done whenever the store is opened)")
		}
	}
	c.rep.Checked.Snapshots = len(recs)

	broken := map[string]string{} // key -> why
	for key, r := range recs {
		fsDir := filepath.Join(c.s.root, "snapshots", r.ID, "fs")
		switch {
		case r.Kind == index.SnapshotActive && r.Labels[layers.LabelExtracting] != "" && !r.CreatedAt.Before(processStart):
			c.note("snapshot", key, "being extracted")
			continue
		case r.Kind == index.SnapshotActive && r.Labels[layers.LabelExtracting] != "":
			broken[key] = "active snapshot still marked extracting, left by an unpack that died"
		case !isDir(fsDir):
			broken[key] = "recorded but its directory " + fsDir + " is missing"
		case r.Parent != "":
			if p, ok := recs[r.Parent]; !ok {
				broken[key] = "its parent " + r.Parent + " does not exist"
			} else if p.Kind != index.SnapshotCommitted {
				broken[key] = "its parent " + r.Parent + " is not committed"
			}
		}
	}
	for id, mt := range dirs {
		if recordsID(recs, id) || !mt.Before(processStart) {
			continue // a snapshot being prepared right now has its directory first
		}
		name := "dir " + id
		if !c.opts.Repair {
			c.problem("snapshot", name, "directory without a record (--repair removes it)")
			continue
		}
		if err := os.RemoveAll(filepath.Join(c.s.root, "snapshots", id)); err != nil {
			c.problem("snapshot", name, "directory without a record; removing it failed: %v", err)
			continue
		}
		c.repaired("snapshot", name, "removed a snapshot directory without a record")
	}
	if len(broken) == 0 {
		return nil
	}
	// A broken snapshot's descendants are broken too: they stack on it.
	children := map[string][]string{}
	for key, r := range recs {
		children[r.Parent] = append(children[r.Parent], key)
	}
	for _, key := range sortedStrings(broken) {
		why := broken[key]
		if !c.opts.Repair {
			c.problem("snapshot", key, "%s (--repair removes it; it is unpacked again when needed)", why)
			continue
		}
		if err := removeSnapshotTree(ctx, sn, key, children); err != nil {
			c.problem("snapshot", key, "%s; removing it failed: %v", why, err)
			continue
		}
		c.repaired("snapshot", key, "removed: %s (unpacked again when needed)", why)
	}
	return nil
}

func recordsID(recs map[string]index.Snapshot, id string) bool {
	for _, r := range recs {
		if r.ID == id {
			return true
		}
	}
	return false
}

func sortedStrings[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// scanSnapshots reads snapshot records and directories (with mtimes).
func (c *checker) scanSnapshots(ctx context.Context) (map[string]index.Snapshot, map[string]time.Time, error) {
	recs := map[string]index.Snapshot{}
	err := c.db.Snapshots().List(ctx, "", func(key string, r index.Snapshot) error {
		recs[key] = r
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("check: list snapshots: %w", err)
	}
	dirs := map[string]time.Time{}
	ents, err := os.ReadDir(filepath.Join(c.s.root, "snapshots"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("check: list snapshot directories: %w", err)
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			dirs[e.Name()] = fi.ModTime()
		}
	}
	return recs, dirs, nil
}

// ingests tells ingests in progress (their lock is held) and resumable
// ones from abandoned ones (nobody holds them and they have not changed
// for staleIngestAge).
func (c *checker) ingests(ctx context.Context) error {
	ins, err := c.s.blobs.Ingests(ctx)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	now := time.Now()
	for _, in := range ins {
		c.rep.Checked.Ingests++
		name := in.Name
		if in.Ref != "" {
			name = strconv.Quote(in.Ref)
		}
		if in.Locked {
			c.note("ingest", name, "in progress")
			continue
		}
		age := now.Sub(in.Updated).Round(time.Second)
		if now.Sub(in.Updated) < staleIngestAge {
			if in.Ref != "" {
				c.note("ingest", name, "resumable (%d bytes, last written %s ago; nobody holds it)", in.Size, age)
			} else {
				c.note("ingest", name, "started but holds no data yet")
			}
			continue
		}
		if !c.opts.Repair {
			c.problem("ingest", name, "stale: nobody holds it and it has not changed for %s (--repair removes it)", age)
			continue
		}
		if err := c.s.blobs.DiscardIngest(ctx, in); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			c.problem("ingest", name, "stale; removing it failed: %v", err)
			continue
		}
		c.repaired("ingest", name, "removed a stale ingest (unchanged for %s)", age)
	}
	return nil
}

// mounts finds mounts of this store whose server is gone: overlays under
// <root>/mounts and the store's FUSE mount, which then answer ENOTCONN.
func (c *checker) mounts(ctx context.Context) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil // not Linux, or no /proc: nothing to look at
	}
	defer f.Close()
	mountsDir := filepath.Join(c.s.root, "mounts") + "/"
	var targets []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tail) < 2 {
			continue
		}
		mp := unescapeMount(fields[4])
		fstype, source := tail[0], unescapeMount(tail[1])
		ours := strings.HasPrefix(mp, mountsDir) ||
			(strings.HasPrefix(fstype, "fuse") && filepath.Clean(source) == c.s.root)
		if ours {
			targets = append(targets, mp)
		}
	}
	for _, mp := range targets {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.rep.Checked.Mounts++
		// statfs, not stat: the kernel may answer stat from its attribute
		// cache, but always asks the server for statfs.
		var st unix.Statfs_t
		if err := unix.Statfs(mp, &st); !errors.Is(err, unix.ENOTCONN) {
			continue
		}
		if !c.opts.Repair {
			c.problem("mount", mp, "stale: its server is gone (ENOTCONN; --repair detaches it)")
			continue
		}
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			c.problem("mount", mp, "stale; detaching it failed: %v", err)
			continue
		}
		c.repaired("mount", mp, "detached a stale mount whose server was gone")
	}
	return nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
