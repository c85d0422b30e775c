// Package index turns the table of contents (TOC) of an eStargz or
// zstd:chunked layer into a compact, immutable tree that the FUSE nodes and
// the chunk reader query.
//
// The estargz package keeps one heap object per TOC entry with maps of
// children and strings for every field; for a mounted layer that lives as
// long as the mount this costs several hundred bytes per entry. An Index
// keeps flat slices of small structs instead: inodes, directory entries
// sorted by name (binary search for lookups), one string arena for names and
// link targets, and one chunk table. Building it is also where a hostile TOC
// is refused: names that escape the root, hardlink cycles, chunks that do
// not tile their file, offsets outside the blob, missing digests, and TOCs
// so large, long-named or deep that merely building them would exhaust the
// daemon (see the limits in limits.go).
//
// # Content keys
//
// The cache shares a file's bytes between every layer and image that holds
// the same file, keyed by what the index hands out as the file's content key
// (ContentKey, ContentKeys). That key must not be the whole-file digest the
// TOC claims: nothing ever checks it, only chunk digests are verified as
// chunks are fetched, so a hostile image whose TOC claimed libc's digest over
// its own chunks would plant its bytes in the cache entry every other image
// reads libc from. A content key is instead derived from what is verified:
// sha256 over a domain-separation prefix, the file size and, for each chunk
// in file order, its file offset, size and sha256, all fixed-width and
// big-endian so that no two different layouts encode alike. Two files share
// a key only if every byte stored under it was checked against the same chunk
// digests at the same offsets, so sharing stays safe between images that do
// not trust each other and still works for honest identical files (chunked
// alike, as one converter does). The size is part of the key, so a hostile
// TOC cannot create an entry of the wrong size under an honest key either.
package index

import (
	"iter"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"
)

// ID names an inode of the index. Hardlinked names share one ID.
type ID int32

// Root is the ID of the root directory.
const Root ID = 0

// Attr is what stat reports for an inode.
type Attr struct {
	Mode     uint32 // file type bits (syscall.S_IFREG...) and permission bits
	UID, GID uint32
	Size     int64
	Mtime    int64 // seconds since the epoch
	MtimeNs  uint32
	Nlink    uint32
	DevMajor uint32
	DevMinor uint32
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Chunk is one verified unit of a regular file's content: ChunkSize bytes at
// FileOffset of the file, stored compressed at [BlobOffset, BlobEnd) of the
// layer blob, InnerOffset bytes into the decompressed stream that starts at
// BlobOffset (several small chunks may share one compressed frame).
type Chunk struct {
	BlobOffset  int64
	BlobEnd     int64
	InnerOffset int64
	FileOffset  int64
	Size        int64
	Digest      [32]byte // sha256 of the uncompressed chunk
}

// End is the file offset just past the chunk.
func (c Chunk) End() int64 { return c.FileOffset + c.Size }

// DigestString returns the chunk digest in OCI form.
func (c Chunk) DigestString() digest.Digest { return sha256Digest(c.Digest) }

// inode is the compact per-inode record. Its meaning of first/count depends
// on the type: directory entries for directories, chunks for regular files,
// bytes of the string arena for symlink targets.
type inode struct {
	size     int64
	mtime    int64
	mode     uint32
	uid, gid uint32
	nlink    uint32
	mtimeNs  uint32
	devMajor uint32
	devMinor uint32
	first    uint32
	count    uint32
	key      int32 // index into Index.keys, -1 for none
}

// dent is one name in a directory.
type dent struct {
	nameOff uint32
	nameLen uint32
	ino     ID
}

// Index is an immutable, compact tree of one layer. It is safe for
// concurrent use.
type Index struct {
	inodes []inode
	dents  []dent
	chunks []Chunk
	// byBlob lists the positions in chunks in blob order (BlobOffset, then
	// InnerOffset), and owner the regular file of each chunk: chunks is in
	// inode order, and read-ahead walks the blob. 8 bytes per chunk.
	byBlob []uint32
	owner  []ID
	keys   [][32]byte // distinct content keys, see ContentKey
	arena  string
	xattrs map[ID][]Xattr
	// prefetchEnd is the blob offset of the prefetch landmark: everything
	// stored before it is what the image wants first. 0 means no landmark.
	prefetchEnd int64
	files       int
}

// Len returns the number of inodes.
func (x *Index) Len() int { return len(x.inodes) }

// Files returns the number of regular files with content.
func (x *Index) Files() int { return x.files }

// Valid reports whether id names an inode of the index.
func (x *Index) Valid(id ID) bool { return id >= 0 && int(id) < len(x.inodes) }

// Attr returns the attributes of id.
func (x *Index) Attr(id ID) Attr {
	n := &x.inodes[id]
	size := n.size
	if n.mode&syscall.S_IFMT == syscall.S_IFLNK {
		// lstat reports a symlink's size as its target's length; programs
		// size readlink buffers by it.
		size = int64(n.count)
	}
	return Attr{
		Mode: n.mode, UID: n.uid, GID: n.gid, Size: size,
		Mtime: n.mtime, MtimeNs: n.mtimeNs, Nlink: n.nlink,
		DevMajor: n.devMajor, DevMinor: n.devMinor,
	}
}

// Mode returns the file type and permission bits of id.
func (x *Index) Mode(id ID) uint32 { return x.inodes[id].mode }

// IsDir reports whether id is a directory.
func (x *Index) IsDir(id ID) bool { return x.inodes[id].mode&syscall.S_IFMT == syscall.S_IFDIR }

// Lookup finds name in directory dir.
func (x *Index) Lookup(dir ID, name string) (ID, bool) {
	ds := x.children(dir)
	i := sort.Search(len(ds), func(i int) bool { return x.name(ds[i]) >= name })
	if i < len(ds) && x.name(ds[i]) == name {
		return ds[i].ino, true
	}
	return 0, false
}

// NumChildren returns how many names directory dir holds.
func (x *Index) NumChildren(dir ID) int { return len(x.children(dir)) }

// Child returns the i-th name of directory dir, in name order.
func (x *Index) Child(dir ID, i int) (string, ID) {
	d := x.children(dir)[i]
	return x.name(d), d.ino
}

// Children iterates over the names of directory dir in name order.
func (x *Index) Children(dir ID) iter.Seq2[string, ID] {
	return func(yield func(string, ID) bool) {
		for _, d := range x.children(dir) {
			if !yield(x.name(d), d.ino) {
				return
			}
		}
	}
}

func (x *Index) children(dir ID) []dent {
	n := &x.inodes[dir]
	if n.mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil
	}
	return x.dents[n.first : n.first+n.count]
}

func (x *Index) name(d dent) string { return x.arena[d.nameOff : d.nameOff+d.nameLen] }

// PathOf returns an absolute path of id in the layer (one of them, for a
// file with several links). The index keeps no parent links, so it scans
// every directory once per path component: for occasional use only.
func (x *Index) PathOf(id ID) (string, bool) {
	var parts []string
	for id != Root {
		parent, name, ok := x.parentOf(id)
		if !ok || len(parts) > len(x.inodes) {
			return "", false
		}
		parts = append(parts, name)
		id = parent
	}
	slices.Reverse(parts)
	return "/" + strings.Join(parts, "/"), true
}

// parentOf finds a directory holding id, and id's name there.
func (x *Index) parentOf(id ID) (ID, string, bool) {
	for dir := range x.inodes {
		for _, d := range x.children(ID(dir)) {
			if d.ino == id && d.ino != ID(dir) {
				return ID(dir), x.name(d), true
			}
		}
	}
	return 0, "", false
}

// Readlink returns the target of symlink id.
func (x *Index) Readlink(id ID) (string, bool) {
	n := &x.inodes[id]
	if n.mode&syscall.S_IFMT != syscall.S_IFLNK {
		return "", false
	}
	return x.arena[n.first : n.first+n.count], true
}

// Xattrs returns the extended attributes of id, sorted by name. The caller
// must not modify them.
func (x *Index) Xattrs(id ID) []Xattr { return x.xattrs[id] }

// Xattr returns the value of the extended attribute name of id.
func (x *Index) Xattr(id ID, name string) ([]byte, bool) {
	for _, a := range x.xattrs[id] {
		if a.Name == name {
			return a.Value, true
		}
	}
	return nil, false
}

// ContentKey returns the content key of regular file id (see the package
// documentation), or "" when it has no content. It is a sha256 digest in
// OCI form but not the digest of the file's bytes.
func (x *Index) ContentKey(id ID) digest.Digest {
	n := &x.inodes[id]
	if n.key < 0 {
		return ""
	}
	return sha256Digest(x.keys[n.key])
}

// Chunks returns the chunks of regular file id in file order. They tile
// [0, Size) without gaps. The caller must not modify them.
func (x *Index) Chunks(id ID) []Chunk {
	n := &x.inodes[id]
	if n.mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil
	}
	return x.chunks[n.first : n.first+n.count]
}

// ChunkBase returns the position of regular file id's first chunk in the
// layer-wide chunk table, so callers can keep one flat bitmap of chunks.
func (x *Index) ChunkBase(id ID) int { return int(x.inodes[id].first) }

// NumChunks returns the number of chunks of the whole layer.
func (x *Index) NumChunks() int { return len(x.chunks) }

// ChunkRange returns the indices [lo, hi) into Chunks(id) of the chunks that
// hold bytes [off, off+n) of the file.
func (x *Index) ChunkRange(id ID, off, n int64) (lo, hi int) {
	cs := x.Chunks(id)
	end := off + n
	lo = sort.Search(len(cs), func(i int) bool { return cs[i].End() > off })
	hi = sort.Search(len(cs), func(i int) bool { return cs[i].FileOffset >= end })
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

// BlobNext returns the chunk stored next in the blob after chunk i of
// regular file id (blob order is TOC order: the files of the tar in turn),
// as a file and the chunk's index in Chunks of that file; ok is false after
// the last chunk. A chunk sharing the frame of the one before it follows
// it.
func (x *Index) BlobNext(id ID, i int) (next ID, j int, ok bool) {
	pos := x.blobPos(int(x.inodes[id].first) + i)
	if pos < 0 || pos+1 >= len(x.byBlob) {
		return 0, 0, false
	}
	k := x.byBlob[pos+1]
	next = x.owner[k]
	return next, int(k - x.inodes[next].first), true
}

// blobPos returns the position in byBlob of chunk k of the chunk table,
// or -1: a binary search by blob offset, then a short scan over chunks that
// share a frame.
func (x *Index) blobPos(k int) int {
	c := &x.chunks[k]
	i := sort.Search(len(x.byBlob), func(i int) bool {
		o := &x.chunks[x.byBlob[i]]
		return o.BlobOffset > c.BlobOffset || o.BlobOffset == c.BlobOffset && o.InnerOffset >= c.InnerOffset
	})
	for ; i < len(x.byBlob) && x.chunks[x.byBlob[i]].BlobOffset == c.BlobOffset; i++ {
		if int(x.byBlob[i]) == k {
			return i
		}
	}
	return -1
}

// RegularFiles iterates over every regular file with content, in ID order.
func (x *Index) RegularFiles() iter.Seq[ID] {
	return func(yield func(ID) bool) {
		for i := range x.inodes {
			if x.inodes[i].key >= 0 && !yield(ID(i)) {
				return
			}
		}
	}
}

// PrefetchEnd returns the blob offset of the prefetch landmark: the chunks
// stored before it are the ones the image wants first. It returns 0 when
// the layer has no landmark or says that nothing should be prefetched.
func (x *Index) PrefetchEnd() int64 { return x.prefetchEnd }

// ContentKeyIndex returns the position of regular file id's content key in
// ContentKeys(), or -1 when it has no content. Callers that keep
// ContentKeys() use it to share one string per key instead of building one
// per call.
func (x *Index) ContentKeyIndex(id ID) int { return int(x.inodes[id].key) }

// ContentKeys returns the distinct content keys of the layer's files: what
// the cache may key their bytes by (see the package documentation).
func (x *Index) ContentKeys() []digest.Digest {
	out := make([]digest.Digest, len(x.keys))
	for i, d := range x.keys {
		out[i] = sha256Digest(d)
	}
	return out
}

// SizeBytes estimates the heap bytes the index holds, for memory reports.
func (x *Index) SizeBytes() int64 {
	const inodeSize, dentSize, chunkSize, blobOrderSize, digestSize = 64, 12, 72, 8, 32
	n := int64(len(x.inodes))*inodeSize + int64(len(x.dents))*dentSize +
		int64(len(x.chunks))*(chunkSize+blobOrderSize) + int64(len(x.keys))*digestSize + int64(len(x.arena))
	for _, xs := range x.xattrs {
		for _, a := range xs {
			n += int64(len(a.Name)+len(a.Value)) + 40
		}
	}
	return n
}

func sha256Digest(b [32]byte) digest.Digest {
	const hexdigits = "0123456789abcdef"
	var sb strings.Builder
	sb.Grow(7 + 64)
	sb.WriteString("sha256:")
	for _, c := range b {
		sb.WriteByte(hexdigits[c>>4])
		sb.WriteByte(hexdigits[c&0xf])
	}
	return digest.Digest(sb.String())
}
