package convert

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decompress returns the uncompressed stream of a layer blob, recognising
// gzip and zstd by their magic numbers (media types are not always right)
// and passing anything else through as a plain tar.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	head, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

// stagedLayer is what reading a source layer leaves: the digest of its
// uncompressed tar and an index of its entries' headers.
type stagedLayer struct {
	diffID v1.Hash
	// entries maps each entry's clean name ("usr/bin/sh", "" for the root)
	// to its header, payload-less. A later entry of the same name wins, as
	// when the layer is applied.
	entries map[string]*tar.Header
	// order lists the clean names in the order the tar holds them.
	order []string
}

// stage reads an uncompressed layer tar from r, checks every entry, and copies
// the bytes unchanged to w. It returns the entries' index and the tar's
// digest. Errors name the entry at fault; the caller adds the layer. onEntry,
// if set, gets each good entry's header and where its content starts in w.
func stage(r io.Reader, w io.Writer, onEntry func(hdr *tar.Header, contentOffset int64)) (*stagedLayer, error) {
	h := sha256.New()
	n := &byteCount{}
	tee := io.TeeReader(r, io.MultiWriter(w, h, n))
	tr := tar.NewReader(tee)
	sl := &stagedLayer{entries: make(map[string]*tar.Header)}
	last := ""
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, entryErr(last, "reading the tar header after it", err)
		}
		name, err := checkEntry(hdr, sl.entries)
		if err != nil {
			return nil, &entryError{entry: hdr.Name, err: err}
		}
		last = hdr.Name
		if onEntry != nil {
			// The tar reader reads a header and no further.
			onEntry(hdr, n.n)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return nil, entryErr(hdr.Name, "reading its content", err)
		}
		if _, seen := sl.entries[name]; !seen {
			sl.order = append(sl.order, name)
		}
		sl.entries[name] = indexHeader(hdr)
	}
	// The tar reader stops at the end-of-archive marker; the diff_id covers
	// every byte, padding included.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, entryErr(last, "reading the padding after it", err)
	}
	sl.diffID = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
	return sl, nil
}

// entryError names the tar entry an error is about.
type entryError struct {
	entry string
	err   error
}

func (e *entryError) Error() string { return fmt.Sprintf("entry %q: %v", e.entry, e.err) }
func (e *entryError) Unwrap() error { return e.err }

func entryErr(entry, doing string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w (truncated layer): %w", err, errdefs.ErrInvalidArgument)
	} else if !errdefs.IsInvalidArgument(err) {
		err = fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	if entry == "" {
		return fmt.Errorf("%s (before the first entry): %w", strings.TrimSuffix(doing, " after it"), err)
	}
	return &entryError{entry: entry, err: fmt.Errorf("%s: %w", doing, err)}
}

// checkEntry rejects entries that are unsafe or that no snapshotter can
// apply, and returns the entry's clean name.
//
// Names must stay inside the root: no absolute names and no ".." component
// at all (no legitimate layer needs one). Hard links name another entry of
// the layer, so their target gets the same rules and must already be in the
// layer (tar writes a link's target first). Symbolic link targets are data
// that the kernel resolves inside the container's root, where an absolute
// target such as "/usr/lib/x" is normal; only a relative target that climbs
// above the root from the link's directory is rejected, as no well-built
// image has one and it is the shape of a path-traversal attack on tools that
// extract layers onto a host.
func checkEntry(hdr *tar.Header, seen map[string]*tar.Header) (string, error) {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return "", err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return "", fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
		}
		if _, ok := seen[target]; !ok || target == name {
			return "", fmt.Errorf("hard link target %q is not an earlier entry of the layer: %w", hdr.Linkname, errdefs.ErrInvalidArgument)
		}
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return "", fmt.Errorf("empty symlink target: %w", errdefs.ErrInvalidArgument)
		}
		if !path.IsAbs(hdr.Linkname) && escapes(path.Join(path.Dir(name), hdr.Linkname)) {
			return "", fmt.Errorf("symlink target %q escapes the root: %w", hdr.Linkname, errdefs.ErrInvalidArgument)
		}
	default:
		return "", fmt.Errorf("unsupported tar entry type %q: %w", hdr.Typeflag, errdefs.ErrInvalidArgument)
	}
	if name == "" && hdr.Typeflag != tar.TypeDir {
		return "", fmt.Errorf("the root must be a directory: %w", errdefs.ErrInvalidArgument)
	}
	return name, nil
}

// cleanName returns an entry name without "./" prefix or trailing "/", "" for
// the root, or an error when the name is absolute or has a ".." component.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("empty name: %w", errdefs.ErrInvalidArgument)
	}
	if path.IsAbs(name) {
		return "", fmt.Errorf("absolute path %q: %w", name, errdefs.ErrInvalidArgument)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("path %q has a \"..\" component: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

func escapes(p string) bool { return p == ".." || strings.HasPrefix(p, "../") }

// indexHeader keeps what the root filesystem view needs of a header: the
// metadata of directories (which may be copied into an upper layer) and the
// type, size and target of everything else.
func indexHeader(hdr *tar.Header) *tar.Header {
	h := &tar.Header{
		Typeflag: hdr.Typeflag,
		Name:     hdr.Name,
		Linkname: hdr.Linkname,
		Size:     hdr.Size, // whether a file read in part is worth leaving in place
	}
	if hdr.Typeflag != tar.TypeDir {
		return h
	}
	h.Mode, h.Uid, h.Gid = hdr.Mode, hdr.Uid, hdr.Gid
	h.Uname, h.Gname = hdr.Uname, hdr.Gname
	h.ModTime = hdr.ModTime
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			if h.PAXRecords == nil {
				h.PAXRecords = make(map[string]string)
			}
			h.PAXRecords[k] = v
		}
	}
	return h
}
