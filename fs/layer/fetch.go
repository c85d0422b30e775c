package layer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/lazysnap/lazysnap/fs/index"
)

// Flights records the chunks being fetched, so that concurrent reads of a
// chunk share one fetch: the first reader fetches it, later ones wait. A
// chunk is fetched twice at once only when a read overtakes a prefetch or
// background stream that is not worth waiting for (see worthWaiting). Share
// one Flights between layers (WithFlights) to extend this to identical files
// of different layers. Safe for concurrent use.
type Flights struct {
	mu sync.Mutex
	m  map[flightKey]*flight
}

// NewFlights returns an empty Flights.
func NewFlights() *Flights { return &Flights{m: map[flightKey]*flight{}} }

// flightKey names a chunk by its file's content digest (the cache key) and
// its offset in the file.
type flightKey struct {
	file digest.Digest
	off  int64
}

type flight struct {
	done  chan struct{}
	err   error
	class fetchClass
	at    int64 // the chunk's blob offset

	// pos is the blob offset the stream of the run fetching the chunk has
	// reached (the run's start until its answer flows), once that run's
	// request is sent; nil before.
	pos atomic.Pointer[atomic.Int64]
}

// fetchClass is who fetches: a read, a prefetch or the background fetch.
type fetchClass int

const (
	classRead fetchClass = iota
	classPrefetch
	classBackground
)

// worthWaiting reports whether a fetch of class c should wait for fl rather
// than fetch the chunk itself. Reads wait for reads; a read (or a prefetch)
// waits for a prefetch or background stream only when that stream's
// request is sent and the stream is at most near bytes from the chunk: the
// bytes then come about as soon as from a request of its own, and come
// once. Otherwise it would queue behind bulk work, or, for a background run
// not yet admitted, wait for a request that itself waits for the
// foreground to finish.
func (fl *flight) worthWaiting(c fetchClass, near int64) bool {
	if c == classBackground || fl.class == classRead || fl.class == c {
		return true
	}
	p := fl.pos.Load()
	return p != nil && fl.at-p.Load() <= near
}

// claim returns the flight for k and whether the caller owns it (must fetch
// and finish it) or must wait for it.
func (g *Flights) claim(k flightKey, c fetchClass, at int64) (*flight, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if fl, ok := g.m[k]; ok {
		return fl, false
	}
	fl := &flight{done: make(chan struct{}), class: c, at: at}
	g.m[k] = fl
	return fl, true
}

func (g *Flights) finish(k flightKey, fl *flight, err error) {
	if fl == nil {
		return // fetched without a claim, overtaking another's flight
	}
	g.mu.Lock()
	delete(g.m, k)
	g.mu.Unlock()
	fl.err = err
	close(fl.done)
}

// target is one chunk to fetch and the open file it belongs to.
type target struct {
	f  *File
	i  int
	fl *flight // set once claimed; nil when overtaking another's flight
}

func (t target) chunk() index.Chunk { return t.f.chunks[t.i] }
func (t target) key() flightKey     { return flightKey{t.f.digest, t.f.chunks[t.i].FileOffset} }

// plan says how a set of chunks is fetched.
type plan struct {
	class       fetchClass
	maxBytes    int64 // compressed bytes of one request
	maxGap      int64 // bytes a request may skip between two wanted frames
	concurrency int   // requests at once
	noTail      bool  // no read-ahead tail, even for a read
	// rank orders the requests of a fetch by the files they bring (lower
	// first): a list's order of need. nil: blob order.
	rank map[index.ID]int
}

// readPlan is how a read fetches: exactly the missing frames, a few
// requests at once.
func (l *Layer) readPlan() plan {
	return plan{class: classRead, maxBytes: l.opts.maxRequestBytes, concurrency: l.opts.concurrency}
}

// fetchChunks fetches the chunks idx of f with plan p.
func (l *Layer) fetchChunks(ctx context.Context, f *File, idx []int, p plan) error {
	ts := make([]target, len(idx))
	for k, i := range idx {
		ts[k] = target{f: f, i: i}
	}
	return l.fetchTargets(ctx, ts, p)
}

// fetchTargets fetches the chunks ts: those no one else is fetching (or
// whose fetch is not worth waiting for) in coalesced Range requests (a
// bounded number at once), then it waits for the ones others are fetching.
func (l *Layer) fetchTargets(ctx context.Context, ts []target, p plan) error {
	var mine []target
	var theirs []*flight
	for _, t := range ts {
		fl, own := l.opts.flights.claim(t.key(), p.class, t.chunk().BlobOffset)
		switch {
		case own:
			t.fl = fl
		case !fl.worthWaiting(p.class, l.opts.maxRequestBytes):
			// Fetch it ourselves; the owner stores the same bytes again.
		default:
			theirs = append(theirs, fl)
			continue
		}
		mine = append(mine, t)
	}
	if p.class == classRead {
		mine = l.fromSpool(ctx, mine)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.concurrency)
	runs := coalesce(mine, p.maxBytes, p.maxGap)
	if p.rank != nil {
		slices.SortStableFunc(runs, func(a, b []target) int {
			return cmp.Compare(runRank(a, p.rank), runRank(b, p.rank))
		})
	}
	for k, run := range runs {
		last := k == len(runs)-1 && p.class == classRead && !p.noTail && l.opts.readAhead > 0 && l.listed.Load() == 0
		l.startRun(gctx, g, run, p.class, last)
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, fl := range theirs {
		select {
		case <-fl.done:
			// Another reader's cancellation is not ours: the caller looks
			// for missing chunks again and fetches them itself.
			if fl.err != nil && !isContextErr(fl.err) {
				return fl.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// startRun fetches run on g. A read's request goes on past the read's own
// chunks through the rest of their chunk window (withWindow) and, for the
// read's last request (in blob order), into what is stored after them:
// raw into the spool when the layer has one, decoded otherwise. The read
// waits for its own chunks only.
func (l *Layer) startRun(ctx context.Context, g *errgroup.Group, run []target, class fetchClass, last bool) {
	if class != classRead || !l.streams.begin() {
		g.Go(func() error { return l.fetchRun(ctx, run, class) })
		return
	}
	own := len(run)
	run, done := l.withWindow(run)
	if end := l.rawTailEnd(last, run[len(run)-1]); end > 0 {
		g.Go(func() error { return l.fetchRunRawAhead(ctx, run, own, end, done) })
		return
	}
	tailFiles := 0
	if last {
		tail, files, closeTail := l.readAhead(run[len(run)-1])
		closeWindow := done
		run, tailFiles = append(run, tail...), len(files)
		done = func() { closeWindow(); closeTail() }
	}
	if len(run) == own {
		done()
		l.streams.end()
		g.Go(func() error { return l.fetchRun(ctx, run, class) })
		return
	}
	g.Go(func() error { return l.fetchRunAhead(ctx, run, own, tailFiles, done) })
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// runRank is the lowest rank of the files run brings; files without one
// come last.
func runRank(run []target, rank map[index.ID]int) int {
	best := math.MaxInt
	for _, t := range run {
		if r, ok := rank[t.f.id]; ok {
			best = min(best, r)
		}
	}
	return best
}

// coalesce sorts ts in blob order and groups neighbours into runs
// (coalesceSorted).
func coalesce(ts []target, maxBytes, maxGap int64) [][]target {
	sortTargets(ts)
	return coalesceSorted(ts, target.chunk, maxBytes, maxGap)
}

// coalesceSorted groups neighbours of ts, in blob order, (a chunk whose
// frame starts at most maxGap bytes after the previous one ends, or shares
// its frame) into runs of at most maxBytes of compressed data; a single
// larger chunk is a run.
func coalesceSorted[T any](ts []T, chunk func(T) index.Chunk, maxBytes, maxGap int64) [][]T {
	var runs [][]T
	var cur []T
	for _, t := range ts {
		if len(cur) > 0 {
			c, last, start := chunk(t), chunk(cur[len(cur)-1]), chunk(cur[0]).BlobOffset
			sameFrame := c.BlobOffset == last.BlobOffset
			gap := c.BlobOffset - last.BlobEnd
			next := gap >= 0 && gap <= maxGap && c.BlobEnd-start <= maxBytes
			if sameFrame || next {
				cur = append(cur, t)
				continue
			}
			runs = append(runs, cur)
			cur = nil
		}
		cur = append(cur, t)
	}
	if len(cur) > 0 {
		runs = append(runs, cur)
	}
	return runs
}

// sortTargets sorts ts in blob order, and within a frame by inner offset.
func sortTargets(ts []target) {
	slices.SortFunc(ts, func(a, b target) int {
		ca, cb := a.chunk(), b.chunk()
		return cmp.Or(cmp.Compare(ca.BlobOffset, cb.BlobOffset), cmp.Compare(ca.InnerOffset, cb.InnerOffset))
	})
}

// errBadChunk marks data that did not decompress or verify: the fetch is
// retried once.
var errBadChunk = errors.New("chunk does not verify")

// fetchRun fetches one run with one Range request. A chunk that fails
// verification is fetched once more (from that chunk on); a second failure
// fails the run with ErrCorrupt. Every flight of the run is finished,
// whatever happens.
func (l *Layer) fetchRun(ctx context.Context, run []target, class fetchClass) error {
	return l.fetchRunSplit(ctx, run, class, len(run), 0, nil)
}

// fetchRunSplit is fetchRun, calling ownDone (when not nil) once: with nil
// as soon as the first own chunks of run are stored, or with the run's
// error if it ends before. With tailEnd past the run's end, the request
// goes on to tailEnd, its bytes only spooled (see fetchRunRawAhead).
func (l *Layer) fetchRunSplit(ctx context.Context, run []target, class fetchClass, own int,
	tailEnd int64, ownDone func(error)) (err error) {
	done := 0
	defer func() {
		for _, t := range run[done:] {
			l.opts.flights.finish(t.key(), t.fl, cmp.Or(err, error(errAborted)))
		}
		if ownDone != nil {
			ownDone(cmp.Or(err, error(errAborted)))
		}
	}()
	complete := func() {
		t := run[done]
		l.opts.flights.finish(t.key(), t.fl, nil)
		done++
		if done == own && ownDone != nil {
			ownDone(nil)
			ownDone = nil
		}
	}
	for attempt := 0; attempt < 2; attempt++ {
		err = l.fetchOnce(ctx, run[done:], class, tailEnd, complete)
		if err == nil || done == len(run) || !errors.Is(err, errBadChunk) {
			return err // a raw tail that failed is not fetched again
		}
		l.stats.verifyFailures.Add(1)
		l.opts.logger.WarnContext(ctx, "chunk failed verification", "layer", l.Digest(),
			"file", run[done].f.digest, "offset", run[done].chunk().FileOffset, "attempt", attempt+1, "error", err)
	}
	t := run[done]
	return fmt.Errorf("layer %s, file %s, chunk at %d: %w", l.Digest(), t.f.digest, t.chunk().FileOffset, ErrCorrupt)
}

var errAborted = errors.New("fetch aborted")

// markSent marks run's flights as in a request sent from the run's start,
// and returns the position their readers watch (countingReader.pos).
func markSent(run []target) *atomic.Int64 {
	at := new(atomic.Int64)
	at.Store(run[0].chunk().BlobOffset)
	setPos(run, at)
	return at
}

// setPos sets the position the readers of run's flights watch.
func setPos(run []target, p *atomic.Int64) {
	for _, t := range run {
		if t.fl != nil {
			t.fl.pos.Store(p)
		}
	}
}

// fetchOnce sends one Range request for the run and stores each chunk as it
// verifies, calling complete after each. A background request first waits
// for the scheduler to admit it. The raw bytes received go to the spool,
// if the layer has one (see spoolKeeps).
func (l *Layer) fetchOnce(ctx context.Context, run []target, class fetchClass, tailEnd int64,
	complete func()) (err error) {
	start, end := run[0].chunk().BlobOffset, max(run[len(run)-1].chunk().BlobEnd, tailEnd)
	if class == classBackground {
		// Until the scheduler admits the request, readers must not wait
		// for it: it waits for them to finish.
		setPos(run, nil)
		release, err := l.opts.sched.admitBackground(ctx, end-start)
		if err != nil {
			return err
		}
		defer release()
		l.stats.backgroundRequests.Add(1)
	}
	// From here the request is on its way: a reader of a chunk near its
	// start gets it as soon as from a request of its own (worthWaiting).
	at := markSent(run)
	l.stats.requests.Add(1)
	rc, err := l.toc.blob.Fetch(ctx, start, end-start)
	if err != nil {
		return fmt.Errorf("fetching [%d, %d) of layer %s: %w", start, end, l.Digest(), err)
	}
	defer rc.Close()
	spooled := l.spool.claim(start, end)
	defer func() { spooled.finish(spoolKeeps(ctx, err)) }()
	body := &countingReader{r: rc, l: l, pos: at, spool: spooled}
	pos := start
	for i := 0; i < len(run); {
		c := run[i].chunk()
		j := i + 1
		for j < len(run) && run[j].chunk().BlobOffset == c.BlobOffset {
			j++
		}
		if _, err := io.CopyN(io.Discard, body, c.BlobOffset-pos); err != nil {
			return body.cause(err)
		}
		frame := io.LimitReader(body, c.BlobEnd-c.BlobOffset)
		if err := l.readFrame(frame, c.BlobEnd-c.BlobOffset, run[i:j], complete); err != nil {
			return body.cause(err)
		}
		if _, err := io.Copy(io.Discard, frame); err != nil {
			return body.cause(err)
		}
		pos, i = c.BlobEnd, j
	}
	if end > pos {
		// The raw tail: received only to be spooled.
		if _, err := io.CopyN(io.Discard, body, end-pos); err != nil {
			return fmt.Errorf("read-ahead tail: %w", body.cause(err))
		}
	}
	return nil
}

// spoolKeeps says whether the spool may keep the bytes of a request that
// ended with err: the registry's answer to a request that verified, or
// that was cancelled before it could (what it received is then as good as
// a whole answer). A request that failed verification, or whose transport
// broke, may have received anything.
func spoolKeeps(ctx context.Context, err error) bool {
	return err == nil || ctx.Err() != nil && !errors.Is(err, errBadChunk)
}

// readFrame decompresses one compressed frame of size bytes and stores the
// chunks ts it holds (sorted by inner offset), each only after its digest
// matches. A gzip frame is read whole and decompressed with libdeflate
// when the build has it (readWholeFrame), any other one as a stream.
func (l *Layer) readFrame(frame io.Reader, size int64, ts []target, complete func()) error {
	if l.wholeFrames() && size <= maxWholeFrame {
		return l.readWholeFrame(frame, size, ts, complete)
	}
	return l.readFrameStream(frame, ts, complete)
}

// readFrameStream is readFrame through a streaming decompressor.
func (l *Layer) readFrameStream(frame io.Reader, ts []target, complete func()) error {
	zr, release, err := l.frameReader(frame)
	if err != nil {
		return fmt.Errorf("%w: %v", errBadChunk, err)
	}
	defer release()
	return l.storeChunks(zr, ts, complete)
}

// storeChunks stores the chunks ts (sorted by inner offset) from zr, a
// frame's decompressed bytes, calling complete after each.
func (l *Layer) storeChunks(zr io.Reader, ts []target, complete func()) error {
	var pos int64
	for _, t := range ts {
		c := t.chunk()
		if c.InnerOffset < pos {
			return fmt.Errorf("%w: chunks overlap in one frame", errBadChunk)
		}
		if _, err := io.CopyN(io.Discard, zr, c.InnerOffset-pos); err != nil {
			return fmt.Errorf("%w: %v", errBadChunk, err)
		}
		if err := l.storeChunk(zr, t); err != nil {
			return err
		}
		pos = c.InnerOffset + c.Size
		complete()
	}
	return nil
}

// storeChunk reads target t's chunk from zr and writes it to the cache
// once its digest matches.
func (l *Layer) storeChunk(zr io.Reader, t target) error {
	c := t.chunk()
	buf := l.bufs.get(c.Size)
	defer l.bufs.put(buf) // the cache copies what it writes
	if _, err := io.ReadFull(zr, buf); err != nil {
		return fmt.Errorf("%w: %v", errBadChunk, err)
	}
	if sha256.Sum256(buf) != c.Digest {
		return fmt.Errorf("%w: digest mismatch (want %s)", errBadChunk, c.DigestString())
	}
	if err := t.f.entry.WriteAt(buf, c.FileOffset); err != nil {
		return fmt.Errorf("storing a chunk of %s in the cache: %w", t.f.digest, err)
	}
	l.present.mark(t.f.id, t.i, c.Size)
	return nil
}

// frameReader returns a decompressor of one frame and a function that
// releases it. gzip readers and zstd decoders are reused (see gzipFrames
// and zstdFrames).
func (l *Layer) frameReader(frame io.Reader) (io.Reader, func(), error) {
	switch l.toc.decompressor.(type) {
	case *estargz.GzipDecompressor, *estargz.LegacyGzipDecompressor:
		return l.frames.open(frame)
	case *zstdchunked.Decompressor:
		return l.zframes.open(frame)
	}
	zr, err := l.toc.decompressor.Reader(frame)
	if err != nil {
		return nil, nil, err
	}
	return zr, func() { zr.Close() }, nil
}

// countingReader counts the compressed bytes received, tracks the blob
// offset the stream reached (for readers deciding whether to wait for it),
// tees what it receives to the spool, and remembers a transport error, so a
// broken connection is not mistaken for bad data.
type countingReader struct {
	r     io.Reader
	l     *Layer
	pos   *atomic.Int64
	spool *spoolWriter // nil when not spooling
	err   error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.l.stats.bytesFetched.Add(int64(n))
	c.spool.write(p[:n], c.pos.Add(int64(n))-int64(n))
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// cause returns the transport error if there was one, else err.
func (c *countingReader) cause(err error) error {
	if c.err != nil {
		return fmt.Errorf("reading from the registry: %w", c.err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		// The stream promises exactly the bytes asked for; fewer is a
		// short body the remote did not heal.
		return fmt.Errorf("%w: short body: %v", errBadChunk, err)
	}
	return err
}
