package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
)

// Stager takes an archive's blobs into pending storage, where nothing is
// visible until the caller commits it. Stage must read r to its end and
// refuse content that does not hash to expected when expected is set.
type Stager interface {
	Stage(ctx context.Context, member string, r io.Reader, size int64, expected digest.Digest) (digest.Digest, error)
}

// blobKind is what a blob's first bytes say it is.
type blobKind int

const (
	kindOther blobKind = iota
	kindJSON
	kindGzip
	kindZstd
)

// Contents is what Read found in an archive.
type Contents struct {
	Layout         []byte // oci-layout, nil when absent
	Index          []byte // index.json, nil when absent
	DockerManifest []byte // manifest.json, nil when absent
	Repositories   []byte // repositories, nil when absent

	// Files maps every staged member's clean path to its digest.
	Files map[string]digest.Digest
	// Links maps symlink members' paths to the clean archive path they
	// point at (docker-archive writers link legacy layer.tar files).
	Links map[string]string
	Sizes map[digest.Digest]int64
	kinds map[digest.Digest]blobKind
	// Docs holds the blobs that look like JSON documents (manifests,
	// indexes, configs), which Resolve parses.
	Docs map[digest.Digest][]byte
}

// Read reads a tar archive, staging every regular member (metadata files
// are kept in memory instead). Members pass the rule every archive reader
// shares (see walk); symlinks are kept where docker-archive writers put
// them. A blobs/sha256/<hex> member is staged with <hex> as its expected
// digest.
func Read(ctx context.Context, r io.Reader, st Stager) (*Contents, error) {
	c := &Contents{
		Files: map[string]digest.Digest{}, Links: map[string]string{},
		Sizes: map[digest.Digest]int64{}, kinds: map[digest.Digest]blobKind{}, Docs: map[digest.Digest][]byte{},
	}
	docsTotal := 0
	err := walk(ctx, r, func(name string, hdr *tar.Header, body io.Reader) error {
		if hdr.Typeflag == tar.TypeSymlink {
			target, err := linkTarget(name, hdr.Linkname)
			if err != nil {
				return err
			}
			c.Links[name] = target
			return nil
		}
		switch name {
		case layoutFile, indexFile, dockerManifestFile, repositoriesFile:
			b, err := readSmall(body, name, hdr.Size)
			if err != nil {
				return err
			}
			*c.metadata(name) = b
			return nil
		}
		expected, _, err := blobName(name)
		if err != nil {
			return err
		}
		if old, ok := c.Files[name]; ok && expected != "" && old == expected {
			return nil
		}
		br := bufio.NewReaderSize(body, 64<<10)
		head, _ := br.Peek(512)
		kind := kindOf(head)
		var doc *bytes.Buffer
		var in io.Reader = br
		if kind == kindJSON && hdr.Size <= maxDocument {
			doc = &bytes.Buffer{}
			in = io.TeeReader(br, doc)
		}
		d, err := st.Stage(ctx, name, in, hdr.Size, expected)
		if err != nil {
			return err
		}
		if old, ok := c.Files[name]; ok && old != d {
			return fmt.Errorf("archive member %q appears twice with different content: %w", name, errdefs.ErrInvalidArgument)
		}
		c.Files[name] = d
		c.Sizes[d] = hdr.Size
		c.kinds[d] = kind
		if doc != nil && c.Docs[d] == nil {
			docsTotal += doc.Len()
			if docsTotal > maxDocsTotal {
				return fmt.Errorf("archive holds more than %d bytes of JSON documents: %w", maxDocsTotal, errdefs.ErrFailedPrecondition)
			}
			c.Docs[d] = doc.Bytes()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Blob is one blob a tar of blobs carried.
type Blob struct {
	Digest digest.Digest
	Size   int64
}

// ReadBlobs reads a tar of blobs alone (blobs/sha256/<hex> members, what a
// Writer writes without metadata: `casfs content export`), staging each
// with its name as the expected digest. Members pass the rule every archive
// reader shares (see walk); as every member must be a blob, symlinks and
// files elsewhere are refused. It returns the blobs in archive order, each
// once.
func ReadBlobs(ctx context.Context, r io.Reader, st Stager) ([]Blob, error) {
	var out []Blob
	seen := map[digest.Digest]bool{}
	err := walk(ctx, r, func(name string, hdr *tar.Header, body io.Reader) error {
		if hdr.Typeflag == tar.TypeSymlink {
			return symlinkWhereFile(name)
		}
		d, ok, err := blobName(name)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("archive member %q is not under %s: %w", name, blobsDir, errdefs.ErrInvalidArgument)
		}
		if seen[d] {
			return nil
		}
		if _, err := st.Stage(ctx, name, body, hdr.Size, d); err != nil {
			return err
		}
		seen[d] = true
		out = append(out, Blob{Digest: d, Size: hdr.Size})
		return nil
	})
	return out, err
}

// walk reads a tar and hands each member to fn, under the one rule every
// archive reader shares: names are cleaned and must stay inside the
// archive; directories (and global headers) are skipped; regular files and
// symlinks go to fn, which decides where a symlink may be; hard links,
// devices, fifos and anything else are refused. A body that ends early, or
// a member fn leaves unread, is reported as a truncated archive.
func walk(ctx context.Context, r io.Reader, fn func(name string, hdr *tar.Header, body io.Reader) error) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("archive is truncated: %v: %w", err, errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("archive is not a readable tar: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		name, err := memberName(hdr.Name)
		if err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeXGlobalHeader:
			continue
		case tar.TypeReg, tar.TypeSymlink: // the reader reports the old TypeRegA as TypeReg
		default:
			return fmt.Errorf("archive member %q is not a regular file, directory or symlink: %w", name, errdefs.ErrInvalidArgument)
		}
		if err := fn(name, hdr, tr); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return truncated(name, io.ErrUnexpectedEOF)
			}
			return err
		}
		// Next skips what fn left unread; a short member shows there.
	}
}

// blobName says whether an archive path names a blob (blobs/<alg>/<hex>)
// and which: only sha256 blobs are supported, named by their digest.
func blobName(name string) (d digest.Digest, ok bool, err error) {
	rest, ok := strings.CutPrefix(name, blobsDir)
	if !ok {
		if strings.HasPrefix(name, "blobs/") {
			return "", false, fmt.Errorf("archive member %q: only sha256 blobs are supported: %w", name, errdefs.ErrNotImplemented)
		}
		return "", false, nil
	}
	d = digest.NewDigestFromEncoded(digest.SHA256, rest)
	if d.Validate() != nil {
		return "", false, fmt.Errorf("archive member %q is not named by its digest (blobs/sha256/<64 hex>): %w", name, errdefs.ErrInvalidArgument)
	}
	return d, true, nil
}

func symlinkWhereFile(name string) error {
	return fmt.Errorf("archive member %q is not a regular file (it is a symlink) where a file must be: %w", name, errdefs.ErrInvalidArgument)
}

func (c *Contents) metadata(name string) *[]byte {
	switch name {
	case layoutFile:
		return &c.Layout
	case indexFile:
		return &c.Index
	case dockerManifestFile:
		return &c.DockerManifest
	}
	return &c.Repositories
}

func truncated(name string, err error) error {
	return fmt.Errorf("archive is truncated in member %q: %v: %w", name, err, errdefs.ErrInvalidArgument)
}

func readSmall(r io.Reader, name string, size int64) ([]byte, error) {
	if size > maxDocument {
		return nil, fmt.Errorf("archive member %q is %d bytes, more than %d: %w", name, size, maxDocument, errdefs.ErrFailedPrecondition)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, truncated(name, err)
	}
	return b, nil
}

// memberName cleans a member's name and refuses names that leave the
// archive's root.
func memberName(raw string) (string, error) {
	if raw == "" || path.IsAbs(raw) || strings.HasPrefix(raw, "\\") {
		return "", fmt.Errorf("archive member %q is outside the archive (an absolute or empty name): %w", raw, errdefs.ErrInvalidArgument)
	}
	for _, part := range strings.Split(raw, "/") {
		if part == ".." {
			return "", fmt.Errorf("archive member %q is outside the archive (\"..\" leaves the archive root): %w", raw, errdefs.ErrInvalidArgument)
		}
	}
	return strings.TrimPrefix(path.Clean(raw), "./"), nil
}

// linkTarget resolves a symlink member inside the archive. Links are only
// accepted where docker-archive writers put them: never for metadata or
// blobs, never pointing outside the archive.
func linkTarget(name, target string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("archive member %q is a symlink %s: %w", name, why, errdefs.ErrInvalidArgument)
	}
	switch {
	case strings.HasPrefix(name, "blobs/"), name == layoutFile, name == indexFile, name == dockerManifestFile, name == repositoriesFile:
		return "", symlinkWhereFile(name)
	case target == "" || path.IsAbs(target):
		return bad("to an absolute path " + fmt.Sprintf("%q", target))
	}
	clean := path.Join(path.Dir(name), target)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return bad(fmt.Sprintf("to %q outside the archive", target))
	}
	return clean, nil
}

func kindOf(head []byte) blobKind {
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return kindGzip
	case len(head) >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd:
		return kindZstd
	}
	if t := bytes.TrimLeft(head, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return kindJSON
	}
	return kindOther
}

// file resolves an archive path (following symlinks inside the archive)
// to the digest of the staged member.
func (c *Contents) file(p string) (digest.Digest, error) {
	name, err := memberName(p)
	if err != nil {
		return "", err
	}
	for hops := 0; hops < 16; hops++ {
		if d, ok := c.Files[name]; ok {
			return d, nil
		}
		next, ok := c.Links[name]
		if !ok {
			return "", fmt.Errorf("manifest.json names %q, which is not in the archive: %w", p, errdefs.ErrNotFound)
		}
		name = next
	}
	return "", fmt.Errorf("manifest.json names %q, a symlink loop: %w", p, errdefs.ErrInvalidArgument)
}
