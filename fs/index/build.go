package index

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
)

// Option configures Build.
type Option func(*options)

type options struct {
	maxChunkSize     int64
	opaqueXattr      string
	maxEntries       int
	decodeWorkers    int
	minParallelBytes int
}

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		maxChunkSize: 64 << 20,                 // The default is 64 MiB.
		opaqueXattr:  "trusted.overlay.opaque", // The default is the name overlayfs reads as root.
		maxEntries:   1_000_000,                // The default is one million entries.
		// The default is 0: GOMAXPROCS, at most maxAutoDecodeWorkers.
		decodeWorkers: 0,
		// Below this, DecodeBytes decodes on one core: cutting the TOC
		// and starting the workers costs about what it saves
		// (BenchmarkDecodeBytes: even at 30 KiB, ahead from 100 KiB).
		minParallelBytes: 64 << 10,
	}
}

func buildOptions(opts []Option) options {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithMaxChunkSize refuses TOCs with a chunk larger than n uncompressed
// bytes: a chunk is held in memory whole while it is verified. The default is
// 64 MiB (eStargz writes 4 MiB chunks by default).
func WithMaxChunkSize(n int64) Option { return func(o *options) { o.maxChunkSize = n } }

// WithOpaqueXattr sets the extended attribute that marks a directory opaque
// (a layer entry ".wh..wh..opq" in it). overlayfs reads
// "trusted.overlay.opaque" from lower layers unless mounted with userxattr,
// when it reads "user.overlay.opaque". The default is
// "trusted.overlay.opaque".
func WithOpaqueXattr(name string) Option { return func(o *options) { o.opaqueXattr = name } }

// WithMaxEntries refuses TOCs of more than n entries (chunk entries count).
// Decode and Build hold every entry in memory (a few hundred bytes each), so
// this bounds what a hostile TOC can make the daemon allocate. The default is
// 1,000,000, several times the largest layers seen in practice (a few
// hundred thousand files).
func WithMaxEntries(n int) Option { return func(o *options) { o.maxEntries = n } }

// WithDecodeWorkers sets how many goroutines DecodeBytes decodes a large
// TOC's entries with; 1 decodes them as Decode does. The default is
// GOMAXPROCS, at most 4.
func WithDecodeWorkers(n int) Option { return func(o *options) { o.decodeWorkers = n } }

// Names with a special meaning in layer tars and eStargz blobs.
const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = ".wh..wh."
	whiteoutOpaque     = ".wh..wh..opq"
)

// entry kinds beyond the TOC's own types.
const kindWhiteout = "whiteout"

// pending is one name of the layer while the index is being built.
type pending struct {
	name   string
	kind   string // TOC type or kindWhiteout
	toc    int    // index of the TOC entry, -1 for a synthesized directory
	chunks []int  // TOC indices of a regular file's reg and chunk entries
	target *pending
	id     ID
	// linkState marks hardlinks while resolveHardlinks follows chains.
	linkState uint8
	// lastLink is the TOC index of the last hardlink entry naming this
	// entry (0 if none): see attrEntry.
	lastLink int
}

// linkState values.
const (
	linkUnvisited uint8 = iota
	linkOnPath
	linkResolved
)

// builder holds the transient state of Build.
type builder struct {
	ctx        context.Context
	opts       options
	toc        []*estargz.TOCEntry
	payloadEnd int64
	ends       []int64 // compressed end of each TOC entry's frame
	byName     map[string]*pending
	opaque     map[string]bool
	x          *Index
	arena      strings.Builder
	keyIdx     map[[32]byte]int32
	keyBuf     []byte // scratch for contentKey
}

// Build builds an Index from a parsed TOC. payloadEnd is the blob offset
// where compressed file data ends (the TOC's offset). A TOC the index cannot
// trust is refused with an error wrapping errdefs.ErrInvalidArgument.
// Cancelling ctx stops the build within a few thousand steps, with an error
// wrapping ctx.Err().
func Build(ctx context.Context, toc *estargz.JTOC, payloadEnd int64, opts ...Option) (*Index, error) {
	o := buildOptions(opts)
	if toc == nil {
		return nil, invalid("no TOC")
	}
	if len(toc.Entries) > o.maxEntries {
		return nil, invalid("%d entries, more than %d", len(toc.Entries), o.maxEntries)
	}
	b := &builder{
		ctx: ctx, opts: o, toc: toc.Entries, payloadEnd: payloadEnd,
		byName: make(map[string]*pending, len(toc.Entries)),
		opaque: map[string]bool{},
		x:      &Index{xattrs: map[ID][]Xattr{}},
		keyIdx: map[[32]byte]int32{},
	}
	steps := []func() error{b.collect, b.computeEnds, b.resolveHardlinks, b.addParents, b.emit}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return b.x, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("invalid TOC: "+format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}

// collect reads the TOC in order: last entry of a name wins, as in tar
// extraction; chunk entries attach to the regular file before them;
// whiteouts become whiteout entries or opaque marks.
func (b *builder) collect() error {
	var cur *pending
	for i, e := range b.toc {
		if err := tick(b.ctx, i); err != nil {
			return err
		}
		if err := checkEntry(i, e); err != nil {
			return err
		}
		if e.Type == "chunk" {
			if cur == nil {
				return invalid("chunk entry %d follows no regular file", i)
			}
			cur.chunks = append(cur.chunks, i)
			continue
		}
		cur = nil
		p, err := b.collectEntry(i, e)
		if err != nil {
			return err
		}
		if p == nil {
			continue
		}
		if p.kind == "reg" {
			p.chunks = []int{i}
			cur = p
		}
		b.byName[p.name] = p
	}
	return nil
}

// collectEntry turns one non-chunk TOC entry into a pending name, or nil for
// entries that are not names of the tree (opaque marks, landmarks).
func (b *builder) collectEntry(i int, e *estargz.TOCEntry) (*pending, error) {
	name, err := cleanName(e.Name)
	if err != nil {
		return nil, err
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case base == whiteoutOpaque:
		b.opaque[dir] = true
		return nil, nil
	case strings.HasPrefix(base, whiteoutMetaPrefix):
		return nil, nil // aufs metadata (.wh..wh..plnk...), not part of the tree
	case strings.HasPrefix(base, whiteoutPrefix):
		hidden := base[len(whiteoutPrefix):]
		if hidden == "" || hidden == "." || hidden == ".." {
			return nil, invalid("bad whiteout name %q", e.Name)
		}
		return &pending{name: path.Join(dir, hidden), kind: kindWhiteout, toc: i}, nil
	case dir == "" && (base == estargz.PrefetchLandmark || base == estargz.NoPrefetchLandmark):
		// The converter's landmarks are not files of the image.
		if base == estargz.PrefetchLandmark && e.Type == "reg" && e.Offset > 0 {
			b.x.prefetchEnd = e.Offset
		}
		return nil, nil
	}
	switch e.Type {
	case "dir", "reg", "symlink", "hardlink", "char", "block", "fifo":
	default:
		return nil, invalid("entry %q has unknown type %q", e.Name, e.Type)
	}
	if name == "" && e.Type != "dir" {
		return nil, invalid("root entry %q is a %s, not a directory", e.Name, e.Type)
	}
	return &pending{name: name, kind: e.Type, toc: i}, nil
}

// cleanName normalizes a TOC name to a slash-separated path relative to the
// layer root ("" is the root). Leading "/" and "./" are dropped, as tar
// extraction does; a name that climbs out of the root with ".." is refused.
func cleanName(raw string) (string, error) {
	if strings.IndexByte(raw, 0) >= 0 {
		return "", invalid("name %q contains NUL", raw)
	}
	s := path.Clean(strings.TrimLeft(raw, "/"))
	if s == "." {
		return "", nil
	}
	if s == ".." || strings.HasPrefix(s, "../") {
		return "", invalid("name %q escapes the layer root", raw)
	}
	for c := range strings.SplitSeq(s, "/") {
		if len(c) > 255 {
			return "", invalid("name %q has a component longer than 255 bytes", raw)
		}
	}
	return s, nil
}

// computeEnds finds where each data entry's compressed frame ends: at the
// next distinct frame offset, or at payloadEnd for the last one. This is how
// eStargz readers delimit frames, since the TOC records only starts.
func (b *builder) computeEnds() error {
	if b.payloadEnd < 0 {
		return invalid("negative payload end %d", b.payloadEnd)
	}
	b.ends = make([]int64, len(b.toc))
	last := b.payloadEnd
	for i := len(b.toc) - 1; i >= 0; i-- {
		if err := tick(b.ctx, i); err != nil {
			return err
		}
		e := b.toc[i]
		if e.Type == "reg" || e.Type == "chunk" {
			b.ends[i] = last
		}
		if e.Offset != 0 && e.InnerOffset == 0 {
			last = e.Offset
		}
	}
	return nil
}

// resolveHardlinks points every hardlink at the final entry it names,
// following chains and refusing cycles, dangling links and links to
// directories. Each hardlink is followed once: a chain walk stops at a link
// already resolved and resolves every link it passed, so N links cost O(N)
// however they chain.
func (b *builder) resolveHardlinks() error {
	i := 0
	for _, p := range b.byName {
		if err := tick(b.ctx, i); err != nil {
			return err
		}
		i++
		if p.kind != "hardlink" || p.linkState == linkResolved {
			continue
		}
		t, err := b.followLinks(p)
		if err != nil {
			return err
		}
		if t.kind == "dir" || t.kind == kindWhiteout {
			return invalid("hardlink %q points to a %s", p.name, t.kind)
		}
	}
	return nil
}

// followLinks follows the chain from hardlink p to the entry it ends at,
// sets the target of every link on the way, and returns that entry.
func (b *builder) followLinks(p *pending) (*pending, error) {
	var path []*pending
	t := p
	for t.kind == "hardlink" && t.linkState == linkUnvisited {
		t.linkState = linkOnPath
		path = append(path, t)
		name, err := cleanName(b.toc[t.toc].LinkName)
		if err != nil {
			return nil, err
		}
		next, ok := b.byName[name]
		if !ok {
			return nil, invalid("hardlink %q points to missing %q", t.name, name)
		}
		t = next
	}
	if t.linkState == linkOnPath {
		return nil, invalid("hardlink %q is part of a cycle", t.name)
	}
	if t.linkState == linkResolved {
		t = t.target
	}
	for _, q := range path {
		q.target, q.linkState = t, linkResolved
		t.lastLink = max(t.lastLink, q.toc)
	}
	return t, nil
}

// addParents synthesizes directories the TOC implies but does not list, and
// refuses names whose parent is not a directory. The walk up from a name
// stops at the first ancestor that exists: its own ancestors are walked when
// it is (or were, when it was synthesized), so every name is visited once.
func (b *builder) addParents() error {
	names := make([]string, 0, len(b.byName))
	for n := range b.byName {
		names = append(names, n)
	}
	for i, n := range names {
		if err := tick(b.ctx, i); err != nil {
			return err
		}
		if err := b.addParentsOf(n); err != nil {
			return err
		}
	}
	if _, ok := b.byName[""]; !ok {
		b.byName[""] = &pending{name: "", kind: "dir", toc: -1}
	}
	return nil
}

func (b *builder) addParentsOf(n string) error {
	for d := parent(n); d != ""; d = parent(d) {
		q, ok := b.byName[d]
		if !ok {
			b.byName[d] = &pending{name: d, kind: "dir", toc: -1}
			continue
		}
		if q.kind != "dir" {
			return invalid("parent of %q is a %s", n, q.kind)
		}
		return nil
	}
	return nil
}

func parent(name string) string {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return ""
	}
	return name[:i]
}

func base(name string) string { return name[strings.LastIndexByte(name, '/')+1:] }

// link is one directory entry while the index is being emitted.
type link struct {
	dir  ID
	name string
	ino  ID
}

// emit assigns IDs (root first, then in name order, so IDs are stable for a
// given TOC) and writes the compact tables.
func (b *builder) emit() error {
	names := make([]string, 0, len(b.byName))
	for n := range b.byName {
		names = append(names, n)
	}
	slices.Sort(names) // "" (the root) sorts first
	b.x.inodes = make([]inode, 0, len(names))
	for i, n := range names {
		if err := tick(b.ctx, i); err != nil {
			return err
		}
		p := b.byName[n]
		if p.target != nil {
			continue
		}
		p.id = ID(len(b.x.inodes))
		if err := b.addInode(p); err != nil {
			return err
		}
	}
	links := make([]link, 0, len(names))
	for _, n := range names[1:] {
		p := b.byName[n]
		ino := p.id
		if p.target != nil {
			ino = p.target.id
		}
		links = append(links, link{dir: b.byName[parent(n)].id, name: base(n), ino: ino})
	}
	b.addDents(links)
	b.trim()
	b.sortBlobOrder()
	return nil
}

// sortBlobOrder lists the chunks in blob order, for read-ahead. The TOC
// lists them in that order, but the chunk table follows inode IDs (name
// order), so they are sorted once here.
func (b *builder) sortBlobOrder() {
	cs := b.x.chunks
	order := make([]uint32, len(cs))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortFunc(order, func(i, j uint32) int {
		return cmp.Or(cmp.Compare(cs[i].BlobOffset, cs[j].BlobOffset),
			cmp.Compare(cs[i].InnerOffset, cs[j].InnerOffset), cmp.Compare(i, j))
	})
	b.x.byBlob = order
}

// trim reallocates the tables that grew by appending to their exact size:
// up to half of their capacity is unused, and the index lives as long as
// the mount.
func (b *builder) trim() {
	b.x.inodes = slices.Clip(b.x.inodes) // allocated at its final size
	b.x.chunks = slices.Clone(b.x.chunks)
	b.x.owner = slices.Clone(b.x.owner)
	b.x.keys = slices.Clone(b.x.keys)
	b.x.arena = strings.Clone(b.arena.String())
}

// addDents writes each directory's entries, sorted by name, and counts links.
func (b *builder) addDents(links []link) {
	slices.SortFunc(links, func(a, c link) int {
		return cmp.Or(cmp.Compare(a.dir, c.dir), strings.Compare(a.name, c.name))
	})
	nodes := b.x.inodes
	for i := range nodes {
		if nodes[i].mode&syscall.S_IFMT == syscall.S_IFDIR {
			nodes[i].nlink = 2
		} else {
			nodes[i].nlink = 0
		}
	}
	b.x.dents = make([]dent, 0, len(links))
	for i, l := range links {
		if i == 0 || links[i-1].dir != l.dir {
			nodes[l.dir].first = uint32(len(b.x.dents))
		}
		nodes[l.dir].count++
		b.x.dents = append(b.x.dents, dent{nameOff: b.addString(l.name), nameLen: uint32(len(l.name)), ino: l.ino})
		if nodes[l.ino].mode&syscall.S_IFMT == syscall.S_IFDIR {
			nodes[l.dir].nlink++
		} else {
			nodes[l.ino].nlink++
		}
	}
}

func (b *builder) addString(s string) uint32 {
	off := b.arena.Len()
	b.arena.WriteString(s)
	return uint32(off)
}

// addInode appends the inode for p.
func (b *builder) addInode(p *pending) error {
	n := inode{mode: syscall.S_IFDIR | 0o755, key: -1}
	if p.toc < 0 {
		b.x.inodes = append(b.x.inodes, n)
		b.markOpaque(p)
		return nil
	}
	e, attrs := b.toc[p.toc], b.attrEntry(p)
	if err := fillAttrs(&n, e); err != nil {
		return err
	}
	if attrs != e {
		// A hardlink entry's device numbers do not change the file.
		major, minor := n.devMajor, n.devMinor
		if err := fillAttrs(&n, attrs); err != nil {
			return err
		}
		n.devMajor, n.devMinor = major, minor
	}
	var err error
	switch p.kind {
	case "dir":
		n.mode = syscall.S_IFDIR | n.mode
	case "reg":
		n.mode = syscall.S_IFREG | n.mode
		err = b.addChunks(&n, p)
	case "symlink":
		n.mode = syscall.S_IFLNK | n.mode
		n.first, n.count = b.addString(e.LinkName), uint32(len(e.LinkName))
	case "char":
		n.mode = syscall.S_IFCHR | n.mode
	case "block":
		n.mode = syscall.S_IFBLK | n.mode
	case "fifo":
		n.mode = syscall.S_IFIFO | n.mode
	case kindWhiteout:
		// overlayfs takes a character device 0:0 in a lower layer as a whiteout.
		n.mode = syscall.S_IFCHR
		n.devMajor, n.devMinor = 0, 0
	}
	if err != nil {
		return err
	}
	b.x.inodes = append(b.x.inodes, n)
	if p.kind != kindWhiteout {
		if err := b.addXattrs(p.id, attrs); err != nil {
			return err
		}
	}
	b.markOpaque(p)
	return nil
}

// attrEntry is the TOC entry whose mode, owner, times and xattrs the
// inode shows: its own, or the last hardlink entry naming it, since tar
// extraction (containerd's among them) applies each hardlink entry's
// header to the one file all its names share, the last one winning.
func (b *builder) attrEntry(p *pending) *estargz.TOCEntry {
	return b.toc[max(p.toc, p.lastLink)]
}

func (b *builder) markOpaque(p *pending) {
	if p.kind == "dir" && b.opaque[p.name] {
		xs := append(b.x.xattrs[p.id], Xattr{Name: b.opts.opaqueXattr, Value: []byte("y")})
		slices.SortFunc(xs, func(a, c Xattr) int { return strings.Compare(a.Name, c.Name) })
		b.x.xattrs[p.id] = xs
	}
}

// fillAttrs copies the ownership, permission, time and device fields.
func fillAttrs(n *inode, e *estargz.TOCEntry) error {
	if e.UID < 0 || e.UID > math.MaxUint32 || e.GID < 0 || e.GID > math.MaxUint32 {
		return invalid("entry %q has owner %d:%d out of range", e.Name, e.UID, e.GID)
	}
	if e.DevMajor < 0 || e.DevMajor > math.MaxUint32 || e.DevMinor < 0 || e.DevMinor > math.MaxUint32 {
		return invalid("entry %q has device %d:%d out of range", e.Name, e.DevMajor, e.DevMinor)
	}
	n.mode = uint32(e.Mode & 0o7777)
	n.uid, n.gid = uint32(e.UID), uint32(e.GID)
	n.devMajor, n.devMinor = uint32(e.DevMajor), uint32(e.DevMinor)
	if e.ModTime3339 != "" {
		// Unparseable times read as the epoch, as the estargz reader does.
		if t, err := time.Parse(time.RFC3339, e.ModTime3339); err == nil {
			n.mtime, n.mtimeNs = t.Unix(), uint32(t.Nanosecond())
		}
	}
	return nil
}

func (b *builder) addXattrs(id ID, e *estargz.TOCEntry) error {
	if len(e.Xattrs) == 0 {
		return nil
	}
	xs := make([]Xattr, 0, len(e.Xattrs))
	for k, v := range e.Xattrs {
		if k == "" || strings.IndexByte(k, 0) >= 0 {
			return invalid("entry %q has a bad xattr name %q", e.Name, k)
		}
		if strings.HasPrefix(k, trustedPrefix) {
			continue // see trustedPrefix
		}
		xs = append(xs, Xattr{Name: k, Value: v})
	}
	if len(xs) == 0 {
		return nil
	}
	slices.SortFunc(xs, func(a, c Xattr) int { return strings.Compare(a.Name, c.Name) })
	b.x.xattrs[id] = xs
	return nil
}

// addChunks checks that a regular file's chunks tile it and lie inside the
// blob's payload, appends them, and gives the file its content key (see the
// package documentation).
//
// The whole-file digest the TOC claims is still required to parse as
// sha256, although it never keys anything: a file of one chunk without a
// chunk digest is verified against it (eStargz writes it so), and refusing a
// malformed field everywhere is simpler than reasoning about where it is
// harmless.
func (b *builder) addChunks(n *inode, p *pending) error {
	e := b.toc[p.toc]
	if e.Size < 0 {
		return invalid("file %q has negative size", e.Name)
	}
	n.size = e.Size
	if e.Size == 0 {
		return nil
	}
	fileDigest, err := parseSHA256(e.Digest)
	if err != nil {
		return invalid("file %q: content digest: %v", e.Name, err)
	}
	n.first = uint32(len(b.x.chunks))
	var off int64
	for _, ti := range p.chunks {
		c, err := b.chunk(ti, off, e, fileDigest, len(p.chunks) == 1)
		if err != nil {
			return err
		}
		b.x.chunks = append(b.x.chunks, c)
		b.x.owner = append(b.x.owner, p.id)
		off = c.End()
	}
	if off != e.Size {
		return invalid("chunks of %q cover %d of %d bytes", e.Name, off, e.Size)
	}
	n.count = uint32(len(p.chunks))
	n.key = b.internKey(b.contentKey(e.Size, b.x.chunks[n.first:]))
	b.x.files++
	return nil
}

// chunk validates the TOC entry ti as the chunk of file at file offset off.
func (b *builder) chunk(ti int, off int64, file *estargz.TOCEntry, fileDigest [32]byte, only bool) (Chunk, error) {
	c := b.toc[ti]
	size := c.ChunkSize
	if size == 0 {
		size = file.Size - c.ChunkOffset // zero means "to the end of the file"
	}
	switch {
	case c.ChunkOffset != off:
		return Chunk{}, invalid("chunk of %q at %d, want %d", file.Name, c.ChunkOffset, off)
	case size <= 0 || size > file.Size-off:
		return Chunk{}, invalid("chunk of %q at %d has size %d outside the file", file.Name, off, size)
	case size > b.opts.maxChunkSize || c.InnerOffset < 0 || c.InnerOffset > b.opts.maxChunkSize:
		return Chunk{}, invalid("chunk of %q at %d is larger than %d bytes", file.Name, off, b.opts.maxChunkSize)
	case c.Offset < 0 || c.Offset >= b.ends[ti] || b.ends[ti] > b.payloadEnd:
		return Chunk{}, invalid("chunk of %q at %d has blob range [%d, %d) outside the payload [0, %d)",
			file.Name, off, c.Offset, b.ends[ti], b.payloadEnd)
	}
	d := fileDigest
	if c.ChunkDigest != "" || !only {
		var err error
		if d, err = parseSHA256(c.ChunkDigest); err != nil {
			return Chunk{}, invalid("chunk of %q at %d: %v", file.Name, off, err)
		}
	}
	return Chunk{
		BlobOffset: c.Offset, BlobEnd: b.ends[ti], InnerOffset: c.InnerOffset,
		FileOffset: off, Size: size, Digest: d,
	}, nil
}

// contentKeyDomain separates content keys from every other sha256 use, so
// that no key equals the digest of some file or chunk.
const contentKeyDomain = "lazysnap/content-key/v1\x00"

// contentKey derives a file's content key from what is verified: its size
// and, in file order, each chunk's file offset, size and digest, all fixed
// width so that the encoding is unambiguous.
func (b *builder) contentKey(size int64, chunks []Chunk) [32]byte {
	// The record is built in a reused buffer and hashed at once: through
	// hash.Hash, each piece written would escape to the heap.
	b.keyBuf = keyRecord(b.keyBuf[:0], size, chunks)
	return sha256.Sum256(b.keyBuf)
}

func keyRecord(rec []byte, size int64, chunks []Chunk) []byte {
	rec = append(rec, contentKeyDomain...)
	rec = binary.BigEndian.AppendUint64(rec, uint64(size))
	for _, c := range chunks {
		rec = binary.BigEndian.AppendUint64(rec, uint64(c.FileOffset))
		rec = binary.BigEndian.AppendUint64(rec, uint64(c.Size))
		rec = append(rec, c.Digest[:]...)
	}
	return rec
}

// ContentKey is the content key of a file of size bytes stored as chunks
// (only their FileOffset, Size and Digest matter), as ContentKeys gives it:
// for tools and tests that find a file's cache entry from its content.
func ContentKey(size int64, chunks []Chunk) digest.Digest {
	sum := sha256.Sum256(keyRecord(nil, size, chunks))
	return digest.NewDigestFromBytes(digest.SHA256, sum[:])
}

func (b *builder) internKey(k [32]byte) int32 {
	if i, ok := b.keyIdx[k]; ok {
		return i
	}
	i := int32(len(b.x.keys))
	b.x.keys = append(b.x.keys, k)
	b.keyIdx[k] = i
	return i
}

// parseSHA256 parses an OCI digest; only sha256 is accepted, which is what
// eStargz and zstd:chunked write. The common form is parsed by hand: a TOC
// holds one or two digests per file, and digest.Parse's regular expression
// took a third of the time of Build.
func parseSHA256(s string) ([32]byte, error) {
	var out [32]byte
	if s == "" {
		return out, fmt.Errorf("missing digest")
	}
	enc, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		d, err := digest.Parse(s)
		if err != nil {
			return out, err
		}
		return out, fmt.Errorf("digest %q: only sha256 is supported", d)
	}
	if len(enc) != 2*len(out) || strings.IndexFunc(enc, notLowerHex) >= 0 {
		return out, fmt.Errorf("digest %q: %w", s, digest.ErrDigestInvalidFormat)
	}
	if _, err := hex.Decode(out[:], []byte(enc)); err != nil {
		return out, err
	}
	return out, nil
}

// notLowerHex reports whether r is outside the encoding of an OCI sha256
// digest.
func notLowerHex(r rune) bool { return (r < '0' || r > '9') && (r < 'a' || r > 'f') }
