package index

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
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
	// minParallelEntries: see buildWorkers.
	minParallelEntries int
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
		// Below this, Build does its per-entry work on one core: starting
		// the workers costs about what it saves (BenchmarkParallelBuild on
		// 2 cores: even at 1,000 entries, a quarter faster from 2,000).
		minParallelEntries: 2000,
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
// TOC's entries with, and Build does a large TOC's per-entry work with; 1
// decodes them as Decode does and builds on the calling goroutine alone. The
// default is GOMAXPROCS, at most 4.
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
	name string
	kind string // TOC type or kindWhiteout
	toc  int    // index of the TOC entry, -1 for a synthesized directory
	// chunks counts a regular file's reg and chunk entries: they are the
	// TOC's entries toc to toc+chunks-1, since collect attaches to a file
	// only the chunk entries right after it.
	chunks int
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
	workers    int     // goroutines for the per-entry work, see goEach
	ends       []int64 // compressed end of each TOC entry's frame
	byName     map[string]*pending
	// order lists the pendings in TOC order, names a later entry replaced
	// included: the phases that walk every name walk it rather than byName,
	// so that a TOC with several faults is refused for the same one each
	// time (map order would pick one at random).
	order  []*pending
	names  []*pending // every name's pending in name order, the root first
	prep   []prepared // each entry's inode as prepare made it, by TOC index
	chunks []Chunk    // each reg and chunk entry's chunk, by TOC index
	// maxChunks bounds the chunks of the index: the reg and chunk entries.
	maxChunks int
	// maxKeys bounds the distinct content keys: the reg entries.
	maxKeys int
	opaque  map[string]bool
	x       *Index
	arena   strings.Builder
	keyIdx  map[[32]byte]int32
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
		workers: o.buildWorkers(len(toc.Entries)),
		byName:  make(map[string]*pending, len(toc.Entries)),
		order:   make([]*pending, 0, len(toc.Entries)),
		opaque:  map[string]bool{},
		x:       &Index{xattrs: map[ID][]Xattr{}},
		keyIdx:  map[[32]byte]int32{},
	}
	steps := []func() error{b.collect, b.computeEnds, b.resolveHardlinks, b.prepare, b.emit}
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
	cs, err := b.checkEntries()
	if err != nil {
		return err
	}
	var cur *pending
	for i, e := range b.toc {
		if err := tick(b.ctx, i); err != nil {
			return err
		}
		if cs[i].err != nil {
			return cs[i].err
		}
		if e.Type == "chunk" {
			if cur == nil {
				return invalid("chunk entry %d follows no regular file", i)
			}
			cur.chunks++
			b.maxChunks++
			continue
		}
		cur = nil
		p, err := b.collectEntry(i, e, cs[i].name)
		if err != nil {
			return err
		}
		if p == nil {
			continue
		}
		if p.kind == "reg" {
			p.chunks = 1
			b.maxChunks++
			b.maxKeys++
			cur = p
		}
		b.add(p)
	}
	return nil
}

// checked is what collect needs of one TOC entry that depends on that entry
// alone: checkEntries works it out for every entry first, on several cores
// for a large TOC, and collect then reads the entries in order as before, so
// a TOC with several faults is refused for the first one.
type checked struct {
	name string // the entry's name, cleaned; "" for chunk entries
	err  error  // checkEntry's error, or else cleanName's
}

func (b *builder) checkEntries() ([]checked, error) {
	cs := make([]checked, len(b.toc))
	err := b.goEach(len(b.toc), func(i int) { cs[i] = checkOne(i, b.toc[i]) })(true)
	return cs, err
}

func checkOne(i int, e *estargz.TOCEntry) checked {
	if err := checkEntry(i, e); err != nil {
		return checked{err: err}
	}
	if e.Type == "chunk" {
		return checked{}
	}
	name, err := cleanName(e.Name)
	return checked{name: name, err: err}
}

// add makes p the entry of its name, replacing any earlier one.
func (b *builder) add(p *pending) {
	b.byName[p.name] = p
	b.order = append(b.order, p)
}

// collectEntry turns one non-chunk TOC entry, of cleaned name name, into a
// pending name, or nil for entries that are not names of the tree (opaque
// marks, landmarks).
func (b *builder) collectEntry(i int, e *estargz.TOCEntry, name string) (*pending, error) {
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
	for i, p := range b.order {
		if err := tick(b.ctx, i); err != nil {
			return err
		}
		if p.kind != "hardlink" || p.linkState == linkResolved || b.byName[p.name] != p {
			continue // not a link, already followed, or replaced
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

// prepare prepares every name's inode (see prepared) on the other workers
// while this goroutine synthesizes the missing directories and sorts the
// names, which need nothing prepared, and then helps them.
func (b *builder) prepare() error {
	b.prep = make([]prepared, len(b.toc))
	b.chunks = make([]Chunk, len(b.toc))
	join := b.goEach(len(b.order), b.prepareEntry)
	if err := b.addParents(); err != nil {
		join(false)
		return err
	}
	b.names = b.sortedNames()
	return join(true)
}

// addParents synthesizes directories the TOC implies but does not list, and
// refuses names whose parent is not a directory. The walk up from a name
// stops at the first ancestor that exists: its own ancestors are walked when
// it is (or were, when it was synthesized), so every name is visited once
// (twice for the rare name of several entries, which costs nothing).
func (b *builder) addParents() error {
	for i, p := range b.order {
		if err := tick(b.ctx, i); err != nil {
			return err
		}
		if err := b.addParentsOf(p.name); err != nil {
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
	ps := b.names
	b.x.inodes = make([]inode, 0, len(ps))
	for i, p := range ps {
		if err := tick(b.ctx, i); err != nil {
			return err
		}
		if p.target != nil {
			continue
		}
		p.id = ID(len(b.x.inodes))
		if err := b.addInode(p); err != nil {
			return err
		}
	}
	links := make([]link, 0, len(ps))
	for _, p := range ps[1:] {
		ino := p.id
		if p.target != nil {
			ino = p.target.id
		}
		links = append(links, link{dir: b.byName[parent(p.name)].id, name: base(p.name), ino: ino})
	}
	// The chunk table is complete: it is sorted in blob order on another
	// core while the directory entries are written.
	var byBlob []uint32
	cs := b.x.chunks
	wait := b.goDo(func() { byBlob = blobOrder(cs) })
	b.addDents(links)
	b.trim()
	wait()
	b.x.byBlob = byBlob
	return nil
}

// blobOrder lists the positions in cs in blob order, for read-ahead. The
// TOC lists chunks in that order, but the chunk table follows inode IDs
// (name order), so they are sorted once here.
func blobOrder(cs []Chunk) []uint32 {
	order := make([]uint32, len(cs))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortFunc(order, func(i, j uint32) int {
		return cmp.Or(cmp.Compare(cs[i].BlobOffset, cs[j].BlobOffset),
			cmp.Compare(cs[i].InnerOffset, cs[j].InnerOffset), cmp.Compare(i, j))
	})
	return order
}

// trim reallocates the tables that grew by appending, or were allocated at
// their largest, to their exact size: up to half of their capacity is
// unused, and the index lives as long as the mount.
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

// sortedNames lists every name's pending in name order, "" (the root)
// first.
func (b *builder) sortedNames() []*pending {
	names := make([]string, 0, len(b.byName))
	for n := range b.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	ps := make([]*pending, len(names))
	for i, n := range names {
		ps[i] = b.byName[n]
	}
	return ps
}

// prepared is the inode of one name as its TOC entries alone make it
// (attributes, chunks checked, content key), or the error they make it fail
// with: prepare works it out for every name first, on several cores for a
// large TOC, and emit then adds the inodes to the tables in name order as
// before, so a TOC with several faults is refused for the first one.
type prepared struct {
	node   inode
	key    [32]byte // a regular file's content key
	xattrs []Xattr
	err    error
}

// prepareEntry prepares the inode of b.order[i] if it gets one of its own
// (hardlinks share their target's), filling its part of b.chunks.
func (b *builder) prepareEntry(i int) {
	p := b.order[i]
	if p.kind == "hardlink" {
		return
	}
	pr := &b.prep[p.toc]
	pr.node.key = -1
	pr.key, pr.err = b.prepareInode(&pr.node, p)
	if pr.err == nil && p.kind != kindWhiteout {
		pr.xattrs, pr.err = xattrsOf(b.attrEntry(p))
	}
}

// prepareInode fills n from p's TOC entries and, for a regular file,
// checks its chunks and returns its content key.
func (b *builder) prepareInode(n *inode, p *pending) ([32]byte, error) {
	e, attrs := b.toc[p.toc], b.attrEntry(p)
	if err := fillAttrs(n, e); err != nil {
		return [32]byte{}, err
	}
	if attrs != e {
		// A hardlink entry's device numbers do not change the file.
		major, minor := n.devMajor, n.devMinor
		if err := fillAttrs(n, attrs); err != nil {
			return [32]byte{}, err
		}
		n.devMajor, n.devMinor = major, minor
	}
	switch p.kind {
	case "dir":
		n.mode = syscall.S_IFDIR | n.mode
	case "reg":
		n.mode = syscall.S_IFREG | n.mode
		return b.checkChunks(n, p)
	case "symlink":
		n.mode = syscall.S_IFLNK | n.mode
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
	return [32]byte{}, nil
}

// addInode appends the inode for p, as prepareEntry prepared it, and what
// it holds in the shared tables: chunks, content key, link target, xattrs.
// The error prepareEntry met is returned here, in name order, as the
// sequential build met it.
func (b *builder) addInode(p *pending) error {
	if p.toc < 0 {
		b.x.inodes = append(b.x.inodes, inode{mode: syscall.S_IFDIR | 0o755, key: -1})
		b.markOpaque(p)
		return nil
	}
	pr := &b.prep[p.toc]
	if pr.err != nil {
		return pr.err
	}
	n := pr.node
	switch {
	case p.kind == "reg" && n.size > 0:
		b.addChunks(&n, p, pr.key)
	case p.kind == "symlink":
		target := b.toc[p.toc].LinkName
		n.first, n.count = b.addString(target), uint32(len(target))
	}
	b.x.inodes = append(b.x.inodes, n)
	if pr.xattrs != nil {
		b.x.xattrs[p.id] = pr.xattrs
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

// xattrsOf returns the xattrs the index shows for entry e, sorted by name.
// They are sorted before their names are checked, so that of several bad
// names the same is reported each time (map order would pick one at
// random).
func xattrsOf(e *estargz.TOCEntry) ([]Xattr, error) {
	if len(e.Xattrs) == 0 {
		return nil, nil
	}
	xs := make([]Xattr, 0, len(e.Xattrs))
	for k, v := range e.Xattrs {
		xs = append(xs, Xattr{Name: k, Value: v})
	}
	slices.SortFunc(xs, func(a, c Xattr) int { return strings.Compare(a.Name, c.Name) })
	for _, x := range xs {
		if x.Name == "" || strings.IndexByte(x.Name, 0) >= 0 {
			return nil, invalid("entry %q has a bad xattr name %q", e.Name, x.Name)
		}
	}
	// See trustedPrefix.
	xs = slices.DeleteFunc(xs, func(x Xattr) bool { return strings.HasPrefix(x.Name, trustedPrefix) })
	if len(xs) == 0 {
		return nil, nil
	}
	return xs, nil
}

// checkChunks checks that a regular file's chunks tile it and lie inside
// the blob's payload, writes them to b.chunks, and returns the file's
// content key (see the package documentation).
//
// The whole-file digest the TOC claims is still required to parse as
// sha256, although it never keys anything: a file of one chunk without a
// chunk digest is verified against it (eStargz writes it so), and refusing a
// malformed field everywhere is simpler than reasoning about where it is
// harmless.
func (b *builder) checkChunks(n *inode, p *pending) ([32]byte, error) {
	e := b.toc[p.toc]
	if e.Size < 0 {
		return [32]byte{}, invalid("file %q has negative size", e.Name)
	}
	n.size = e.Size
	if e.Size == 0 {
		return [32]byte{}, nil
	}
	fileDigest, err := parseSHA256(e.Digest)
	if err != nil {
		return [32]byte{}, invalid("file %q: content digest: %v", e.Name, err)
	}
	var off int64
	for ti := p.toc; ti < p.toc+p.chunks; ti++ {
		c, err := b.chunk(ti, off, e, fileDigest, p.chunks == 1)
		if err != nil {
			return [32]byte{}, err
		}
		b.chunks[ti] = c
		off = c.End()
	}
	if off != e.Size {
		return [32]byte{}, invalid("chunks of %q cover %d of %d bytes", e.Name, off, e.Size)
	}
	return contentKey(e.Size, b.chunks[p.toc:p.toc+p.chunks]), nil
}

// addChunks appends the chunks of regular file p, which checkChunks
// checked and keyed, and gives the file its content key.
func (b *builder) addChunks(n *inode, p *pending, key [32]byte) {
	if b.x.chunks == nil {
		// Allocated at their largest, rather than grown: trim cuts them to
		// size. Still nil in an index of no chunks, as the tables it builds
		// by appending.
		b.x.chunks = make([]Chunk, 0, b.maxChunks)
		b.x.owner = make([]ID, 0, b.maxChunks)
		// The keys too, and their map, at their largest: grown a step
		// at a time, a big layer's keys were copied and rehashed again
		// and again (BenchmarkDecodeBuild: 5% of its time, 12% of its
		// allocations).
		b.x.keys = make([][32]byte, 0, b.maxKeys)
		b.keyIdx = make(map[[32]byte]int32, b.maxKeys)
	}
	n.first = uint32(len(b.x.chunks))
	b.x.chunks = append(b.x.chunks, b.chunks[p.toc:p.toc+p.chunks]...)
	for range p.chunks {
		b.x.owner = append(b.x.owner, p.id)
	}
	n.count = uint32(p.chunks)
	n.key = b.internKey(key)
	b.x.files++
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
func contentKey(size int64, chunks []Chunk) [32]byte {
	// The record is built in a buffer on the stack, large enough for files
	// of up to 10 chunks, and hashed at once: through hash.Hash, each piece
	// written would escape to the heap.
	var buf [512]byte
	return sha256.Sum256(keyRecord(buf[:0], size, chunks))
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
	sum := contentKey(size, chunks)
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
	if len(enc) != 2*len(out) {
		return out, fmt.Errorf("digest %q: %w", s, digest.ErrDigestInvalidFormat)
	}
	// A table lookup, not a comparison per character: the digits of a
	// digest are random, so which range a character falls in is a branch
	// the CPU mispredicts about every other time.
	var bad byte
	for i := range out {
		hi, lo := hexValue[enc[2*i]], hexValue[enc[2*i+1]]
		bad |= hi | lo
		out[i] = hi<<4 | lo
	}
	if bad > 0xf {
		return [32]byte{}, fmt.Errorf("digest %q: %w", s, digest.ErrDigestInvalidFormat)
	}
	return out, nil
}

// hexValue maps each byte to its value as a digit of the encoding of an
// OCI sha256 digest (lower-case hex only), and every other byte to 0xff.
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()
