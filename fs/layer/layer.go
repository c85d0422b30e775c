// Package layer reads the files of one eStargz layer: a read maps to the
// file's chunks; chunks present in the on-disk cache are read from it, and
// missing ones are fetched from the registry with coalesced, parallel Range
// requests, decompressed, verified against their chunk digest and stored in
// the cache before a byte of them is returned.
package layer

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/cache"
	"github.com/lazysnap/lazysnap/fs/index"
)

// Option configures a Layer.
type Option func(*options)

type options struct {
	maxRequestBytes  int64
	maxPrefetchBytes int64
	maxGapBytes      int64
	concurrency      int
	readAhead        int64
	chunkWindow      int64
	readTimeout      time.Duration
	flights          *Flights
	sched            *Scheduler
	owner            string
	logger           *slog.Logger
	spoolDir         string
	spoolMinPiece    int64
	headRead         func(l *Layer, id index.ID, head []byte)
}

// The defaults the daemon's configuration shows (cmd/lazysnap reads them
// rather than repeating them, and package fs passes its options on only
// when they are set).
const (
	// DefaultMaxRequestBytes is the default of WithMaxRequestBytes.
	DefaultMaxRequestBytes int64 = 4 << 20
	// DefaultConcurrency is the default of WithConcurrency.
	DefaultConcurrency = 4
	// DefaultReadAheadBytes is the default of WithReadAhead: the most a
	// tail reaches, not what it fetches. A raw tail starts at
	// rawTailStart and grows with the reads tails serve (tailBudget); a
	// decoded one is cut to one round trip of the layer's reads (raModel).
	DefaultReadAheadBytes int64 = 4 << 20
	// DefaultReadTimeout is the default of WithReadTimeout.
	DefaultReadTimeout = 30 * time.Second
)

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		maxRequestBytes:  DefaultMaxRequestBytes, // The default is 4 MiB.
		maxPrefetchBytes: 32 << 20,               // The default is 32 MiB.
		maxGapBytes:      256 << 10,              // The default is 256 KiB.
		concurrency:      DefaultConcurrency,     // The default is 4 requests at once per read.
		readAhead:        DefaultReadAheadBytes,  // The default is 4 MiB.
		chunkWindow:      4 << 20,                // The default is 4 MiB, estargz's chunk size.
		readTimeout:      DefaultReadTimeout,     // The default is 30s.
		logger:           slog.Default(),
		spoolDir:         "", // The default keeps no spool.
		// The diff_id stream takes a spooled piece lying between two gaps
		// from the spool only from 64 KiB on, and otherwise fetches it again
		// within its request: cutting a request around a piece costs one
		// more background request (a round trip of the stream, and a
		// request at the registry) to save the piece's bytes. 64 KiB keeps
		// what reads mostly fetch (a chunk of a file, a read-ahead tail of
		// several files) while bounding a 2 MiB request to a few cuts.
		spoolMinPiece: 64 << 10,
	}
}

// WithMaxRequestBytes caps the compressed bytes one coalesced Range request
// of a read asks for (a single larger chunk is still fetched whole). The
// default is 4 MiB.
func WithMaxRequestBytes(n int64) Option { return func(o *options) { o.maxRequestBytes = n } }

// WithReadTimeout bounds how long a read waits for the chunks it lacks,
// all fetching, retrying and waiting for other readers' fetches included;
// past it the read fails (EIO at FUSE) and the error names the registry and
// the layer. The remote's stall timer only bounds the gap between two
// bytes, so without this a registry that trickles a byte now and then
// holds a read forever. 0 or less means the default. The default is 30s.
func WithReadTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.readTimeout = d
		}
	}
}

// WithMaxPrefetchBytes caps the compressed bytes of one Range request of
// Prefetch and FetchAll, which want few large requests. The default is
// 32 MiB.
func WithMaxPrefetchBytes(n int64) Option { return func(o *options) { o.maxPrefetchBytes = n } }

// WithMaxGapBytes sets how many unwanted bytes (tar headers, chunks already
// cached) one request of Prefetch or FetchAll may read through to reach the
// next wanted chunk instead of sending another request. The default is
// 256 KiB.
func WithMaxGapBytes(n int64) Option { return func(o *options) { o.maxGapBytes = max(0, n) } }

// WithReadAhead sets how many compressed bytes past a read's last missing
// chunk its request may go on reading, to bring the chunks of the files
// stored next in the layer (its neighbours in the tar) that are not cached
// yet; the read returns as soon as its own chunks are stored. A layer with
// a spool learns how far below this its raw tails go (tailBudget); one
// without cuts its decoded tail to the files its stream stores within one
// measured round trip (raModel). The request ends at the read's deadline.
// 0 disables read-ahead. The default is 4 MiB.
func WithReadAhead(n int64) Option { return func(o *options) { o.readAhead = max(0, n) } }

// WithChunkWindow sets how far past the start of a read's last chunk the
// read's request goes on through the same file's next chunks (see
// withWindow); chunks of that size or larger get no window. The default is
// 4 MiB, estargz's default chunk size.
func WithChunkWindow(n int64) Option { return func(o *options) { o.chunkWindow = max(0, n) } }

// WithScheduler shares the scheduler that puts reads before background
// fetches between layers. The default is a scheduler private to the layer.
func WithScheduler(s *Scheduler) Option { return func(o *options) { o.sched = s } }

// WithConcurrency bounds the Range requests one read (or one prefetch) runs
// at once. The default is 4.
func WithConcurrency(n int) Option { return func(o *options) { o.concurrency = max(1, n) } }

// WithFlights shares the record of chunks being fetched between layers, so
// concurrent readers of the same file in different layers cause one fetch.
// The default is a record private to the layer.
func WithFlights(f *Flights) Option { return func(o *options) { o.flights = f } }

// WithOwner sets the name under which the layer holds its files in the
// cache. It must be unique per mounted layer. The default is the blob digest
// followed by a per-Layer suffix.
func WithOwner(owner string) Option { return func(o *options) { o.owner = owner } }

// WithLogger sets the logger. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithSpoolDir keeps, in an unlinked file in dir, the compressed bytes that
// reads, read-ahead and prefetch fetch ahead of StreamAll, so that the
// stream does not fetch them a second time. Give it only to a layer whose
// StreamAll will run: the spool lives until StreamAll returns, DropSpool
// or Close. "" keeps no spool. The default is "".
func WithSpoolDir(dir string) Option { return func(o *options) { o.spoolDir = dir } }

// Layer serves reads of one layer's files. It is safe for concurrent use.
type Layer struct {
	toc   *TOC
	idx   *index.Index
	store *cache.Store
	opts  options

	// ctx lives as long as the layer: Close cancels every fetch in flight.
	ctx    context.Context
	cancel context.CancelFunc

	stats counters
	// listed counts the running prefetches of a learned list (Prefetch,
	// PrefetchFiles): while one runs, reads do not read ahead.
	listed  atomic.Int32
	present presence

	// digests are the index's ContentKeys(), built once: the cache keys the
	// layer's holds and its entries by these strings, so files share them
	// instead of each open building (and the cache keeping) another copy.
	digests []digest.Digest
	frames  gzipFrames
	zframes zstdFrames
	bufs    chunkBufs // buffers chunks are decompressed into
	streams streams   // read-ahead streams outliving their read
	ra      raModel   // how far read-ahead may go (see readAhead)
	checks  checks    // cached chunks being verified
	spool   *spool    // raw bytes kept for StreamAll; nil without one

	bad atomic.Pointer[error] // set by MarkBad

	misses fileMisses // reads that missed, per file (fetchRestOnSecondMiss)
	tails  tailBudget // how far raw tails reach (rawTailEnd)
	heads  fileSet    // files whose head was reported (WithHeadRead)
	sparse fileSet    // files left to their reads (LeaveToReads)
}

// New returns a Layer reading toc's files through store, and records in the
// store that the layer holds them.
func New(toc *TOC, store *cache.Store, opts ...Option) (*Layer, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if toc == nil || store == nil {
		return nil, fmt.Errorf("layer: a TOC and a cache store are required: %w", errdefs.ErrInvalidArgument)
	}
	if o.flights == nil {
		o.flights = NewFlights()
	}
	if o.sched == nil {
		o.sched = NewScheduler()
	}
	l := &Layer{toc: toc, idx: toc.Index, store: store, opts: o}
	if l.opts.owner == "" {
		l.opts.owner = fmt.Sprintf("%s@%p", toc.blob.Digest(), l)
	}
	l.present.init(l.idx)
	l.heads.init(l.idx.Len())
	l.sparse.init(l.idx.Len())
	l.digests = l.idx.ContentKeys()
	if err := store.Hold(l.opts.owner, l.digests); err != nil {
		return nil, fmt.Errorf("holding the files of layer %s in the cache: %w", toc.blob.Digest(), err)
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.openSpool()
	return l, nil
}

// openSpool creates the layer's spool when asked to, with the footer and
// TOC that reading the TOC fetched in it. Without a spool the stream only
// fetches more.
func (l *Layer) openSpool() {
	fetched := l.toc.takeFetched()
	if l.opts.spoolDir == "" {
		return
	}
	s, err := openSpool(l.opts.spoolDir, l.opts.logger)
	if err != nil {
		l.opts.logger.Warn("no spool: the diff_id stream fetches again what reads fetch", "layer", l.Digest(), "error", err)
		return
	}
	l.spool = s
	for _, b := range fetched {
		s.put(b.off, b.data)
	}
}

// DropSpool drops the bytes kept for StreamAll (WithSpoolDir): call it once
// StreamAll is not going to run. StreamAll and Close drop them too.
func (l *Layer) DropSpool() { l.spool.close() }

// Check reports whether the layer's blob is still reachable by fetching its
// last byte.
func (l *Layer) Check(ctx context.Context) error {
	size := l.toc.blob.Size()
	if _, err := readRange(ctx, l.toc.blob, size-1, 1); err != nil {
		return fmt.Errorf("layer %s unreachable: %w", l.Digest(), err)
	}
	return nil
}

// Index returns the layer's tree.
func (l *Layer) Index() *index.Index { return l.idx }

// Digest returns the layer's blob digest.
func (l *Layer) Digest() digest.Digest { return l.toc.blob.Digest() }

// Close cancels every fetch of the layer in flight and releases its cache
// holds. Reads after Close fail.
func (l *Layer) Close() error {
	l.cancel()
	l.streams.close()
	l.spool.close()
	if err := l.store.Drop(l.opts.owner); err != nil {
		return fmt.Errorf("releasing the cache holds of layer %s: %w", l.Digest(), err)
	}
	return nil
}

// ReadAt reads the bytes [off, off+len(p)) of regular file id, fetching
// what the cache lacks. It returns io.EOF past the end of the file.
func (l *Layer) ReadAt(ctx context.Context, id index.ID, p []byte, off int64) (int, error) {
	f, err := l.OpenFile(id)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(ctx, p, off)
}

// File is an open regular file of the layer: it keeps the file's cache
// entry open, so the entry is not evicted while the file is read.
type File struct {
	l      *Layer
	id     index.ID
	size   int64
	digest digest.Digest
	chunks []index.Chunk
	entry  *cache.Entry // nil for an empty file
}

// OpenFile opens regular file id for reading.
func (l *Layer) OpenFile(id index.ID) (*File, error) {
	if err := l.Bad(); err != nil {
		return nil, err
	}
	if !l.idx.Valid(id) || l.idx.Mode(id)&syscall.S_IFMT != syscall.S_IFREG {
		return nil, fmt.Errorf("inode %d of layer %s is no regular file: %w", id, l.Digest(), errdefs.ErrInvalidArgument)
	}
	f := &File{l: l, id: id, size: l.idx.Attr(id).Size, digest: l.fileDigest(id), chunks: l.idx.Chunks(id)}
	if f.size == 0 {
		return f, nil
	}
	e, err := l.store.Entry(f.digest, f.size)
	if err != nil {
		return nil, fmt.Errorf("opening the cache entry of %s: %w", f.digest, err)
	}
	f.entry = e
	return f, nil
}

// fileDigest returns the content key of regular file id (the index's
// ContentKey, never the digest the TOC claims), "" for none.
func (l *Layer) fileDigest(id index.ID) digest.Digest {
	if i := l.idx.ContentKeyIndex(id); i >= 0 {
		return l.digests[i]
	}
	return ""
}

// Size returns the file's size.
func (f *File) Size() int64 { return f.size }

// Complete reports whether every byte of the file is in the cache and was
// verified by this process: only then may the kernel read the cache file
// directly, since nothing checks what it reads there. A file cached by an
// earlier run becomes complete as reads verify its chunks.
func (f *File) Complete() bool { return f.entry == nil || f.entry.Verified(0, f.size) }

// BackingFile returns the cache file holding the whole content, for the
// kernel to read directly (FUSE passthrough). It fails unless Complete.
func (f *File) BackingFile() (*os.File, error) {
	if !f.Complete() || f.entry == nil {
		return nil, fmt.Errorf("file %s is not completely cached and verified: %w", f.digest, errdefs.ErrFailedPrecondition)
	}
	return f.entry.File()
}

// Close releases the file's cache entry.
func (f *File) Close() error {
	if f.entry == nil {
		return nil
	}
	return f.entry.Close()
}

// maxEnsureRounds bounds how often a read looks for missing chunks again
// after fetching or waiting: a chunk another reader failed to fetch, or one
// the cache evicted at once, costs a round.
const maxEnsureRounds = 4

// ReadAt reads [off, off+len(p)) of the file. Missing chunks are fetched,
// verified and cached first; a byte that was not verified is never
// returned. ctx cancels the fetch, as does closing the layer.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d: %w", off, errdefs.ErrInvalidArgument)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	if err := f.l.Bad(); err != nil {
		return 0, err
	}
	// A read past the end is cut short and says io.EOF, as io.ReaderAt
	// asks: a reader that keeps what it read whole (package elfdeps keeps
	// a file's last, short block) would otherwise read it again each time.
	short := int64(len(p)) > f.size-off
	n := min(int64(len(p)), f.size-off)
	p = p[:n]
	lo, hi := f.l.idx.ChunkRange(f.id, off, n)
	if missing := f.missing(ctx, lo, hi); len(missing) == 0 {
		f.l.stats.cacheHits.Add(1)
	} else {
		f.l.fetchRestOnSecondMiss(f, lo, hi)
		if err := f.fetchMissing(ctx, lo, hi, missing, f.l.readPlan()); err != nil {
			return 0, err
		}
	}
	got, err := f.entry.ReadAt(p, off)
	if err != nil {
		return got, fmt.Errorf("reading %d bytes at %d of %s from the cache: %w", n, off, f.digest, err)
	}
	if off == 0 {
		f.l.headRead(f.id, p[:got])
	}
	if got < len(p) || short {
		return got, io.EOF
	}
	return got, nil
}

// fetchMissing makes chunks [lo, hi) present in the cache entry, starting
// with the missing ones found, fetched with plan p. ctx cancels it, as
// does closing the layer.
func (f *File) fetchMissing(ctx context.Context, lo, hi int, missing []int, p plan) error {
	// Background requests wait while this read does.
	defer f.l.opts.sched.beginForeground()()
	ctx, cancel := context.WithTimeoutCause(ctx, f.l.opts.readTimeout, errReadTimeout)
	defer cancel()
	stop := context.AfterFunc(f.l.ctx, cancel)
	defer stop()
	for round := 1; ; round++ {
		if err := f.l.fetchChunks(ctx, f, missing, p); err != nil {
			if errors.Is(context.Cause(ctx), errReadTimeout) {
				return f.l.deadlineError(err)
			}
			return err
		}
		if missing = f.missing(ctx, lo, hi); len(missing) == 0 {
			return nil
		}
		if round == maxEnsureRounds {
			return fmt.Errorf("%d chunks of %s still missing after %d rounds: %w",
				len(missing), f.digest, round, errdefs.ErrUnavailable)
		}
	}
}

// deadlineError is the error of a read whose deadline passed while its
// fetch failed with err. A cancellation inside err (a request cancelled
// because the read ended) is kept as text only: fs/node takes a read that
// failed as cancelled for an interrupted one and answers EINTR, which the
// reader retries at once, so the read would never end.
func (l *Layer) deadlineError(err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("layer %s from %s: %w after %s: %v", l.Digest(), l.source(),
			errReadTimeout, l.opts.readTimeout, err)
	}
	return fmt.Errorf("layer %s from %s: %w after %s: %w", l.Digest(), l.source(),
		errReadTimeout, l.opts.readTimeout, err)
}

// missing returns the indices in [lo, hi) of the chunks not in the cache,
// or in it but not verified by this process and failing verification now.
func (f *File) missing(ctx context.Context, lo, hi int) []int {
	var out []int
	for i := lo; i < hi; i++ {
		c := f.chunks[i]
		if f.entry.Verified(c.FileOffset, c.Size) || f.verifyCached(ctx, i) {
			f.l.present.mark(f.id, i, c.Size)
			continue
		}
		out = append(out, i)
	}
	return out
}

// verifyCached checks chunk i, present in the cache from an earlier run
// but not verified since, against its digest, once per process: bytes on
// disk can rot, and the cache file may have been changed behind our back.
// It reports whether the chunk is present and good. A bad chunk is dropped
// from the cache, so that the caller fetches it like a missing one. The
// kernel sends the reads of one chunk together: one of them checks it, the
// others wait for that.
func (f *File) verifyCached(ctx context.Context, i int) bool {
	c := f.chunks[i]
	if !f.entry.Has(c.FileOffset, c.Size) {
		return false
	}
	k := flightKey{f.digest, c.FileOffset}
	done, own := f.l.checks.begin(k)
	if !own {
		select {
		case <-done:
			return f.entry.Verified(c.FileOffset, c.Size)
		case <-ctx.Done():
			return false // the fetch that follows fails with ctx's error
		}
	}
	defer f.l.checks.end(k, done)
	return f.checkChunk(ctx, c)
}

// checkChunk reads chunk c from the cache and compares it with its digest:
// a match marks it verified, a mismatch drops it.
func (f *File) checkChunk(ctx context.Context, c index.Chunk) bool {
	buf := f.l.bufs.get(c.Size)
	defer f.l.bufs.put(buf)
	if _, err := f.entry.ReadAt(buf, c.FileOffset); err != nil {
		// Dropped by another reader meanwhile, or unreadable: fetch it.
		return false
	}
	if sha256.Sum256(buf) == c.Digest {
		return f.entry.MarkVerified(c.FileOffset, c.Size)
	}
	dropped, err := f.entry.Discard(c.FileOffset, c.Size)
	if dropped > 0 {
		// Counted once, by the reader that dropped it.
		f.l.stats.cacheCorruptions.Add(1)
		f.l.opts.logger.WarnContext(ctx, "cached chunk failed verification; fetching it again",
			"layer", f.l.Digest(), "file", f.digest, "inode", f.id, "offset", c.FileOffset, "size", c.Size)
	}
	if err != nil {
		// The journal may still claim the chunk, and the next run checks
		// it again; this run no longer trusts it.
		f.l.opts.logger.WarnContext(ctx, "dropping a corrupt chunk from the cache", "layer", f.l.Digest(),
			"file", f.digest, "offset", c.FileOffset, "error", err)
	}
	return false
}

// checks records the cached chunks being verified, so that concurrent
// readers of a chunk hash it once. The zero value is ready to use.
type checks struct {
	mu sync.Mutex
	m  map[flightKey]chan struct{}
}

// begin returns the channel closed when k's check ends, and whether the
// caller owns the check (and must end it).
func (c *checks) begin(k flightKey) (chan struct{}, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if done, ok := c.m[k]; ok {
		return done, false
	}
	if c.m == nil {
		c.m = map[flightKey]chan struct{}{}
	}
	done := make(chan struct{})
	c.m[k] = done
	return done, true
}

func (c *checks) end(k flightKey, done chan struct{}) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
	close(done)
}

// errReadTimeout ends a read that waited WithReadTimeout for its chunks.
var errReadTimeout = fmt.Errorf("read deadline passed: %w", context.DeadlineExceeded)

// source names where the layer's blob comes from (the registry host and
// repository), for errors.
func (l *Layer) source() string {
	if s, ok := l.toc.blob.(fmt.Stringer); ok {
		return s.String()
	}
	return "its registry"
}

// ErrCorrupt marks a chunk that failed verification twice. It wraps
// errdefs.ErrDataLoss; the FUSE layer answers it with EIO.
var ErrCorrupt = fmt.Errorf("chunk failed verification: %w", errdefs.ErrDataLoss)
