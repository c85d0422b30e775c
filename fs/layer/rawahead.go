package layer

import (
	"bytes"
	"context"
	"sync"
)

// Read-ahead into the spool. A read's last request goes on past the read's
// own chunks through the bytes stored after them, as raw compressed bytes
// that go only to the layer's spool: nothing is decompressed or stored in
// the cache until a read asks for it (fromSpool). So a tail costs the link
// its bytes and the disk one sequential write, but no cache file per small
// file; that per-file cost is what made decoded tails lose on a fast link
// (see raModel), and it is why a raw tail can be longer. A layer without a
// spool reads ahead the decoded way (readAhead).

// rawTailEnd returns where the raw tail of a read whose last chunk (in blob
// order) is from should end, or 0 for none: no spool, not the read's last
// request, the next chunk is from's own file (a large file's further chunks
// are the kernel's read-ahead to ask for), or the bytes right after from
// are already spooled, being fetched, or passed by the diff_id stream.
func (l *Layer) rawTailEnd(last bool, from target) int64 {
	if !last || l.spool == nil {
		return 0
	}
	id, _, ok := l.idx.BlobNext(from.f.id, from.i)
	if !ok || id == from.f.id {
		return 0
	}
	lo := from.chunk().BlobEnd
	budget := l.tails.next(l.opts.readAhead)
	end := l.spool.free(lo, min(lo+budget, l.toc.blob.Size()))
	if end-lo < minRawTail {
		return 0
	}
	l.tails.sent(budget)
	return end
}

// tailBudget is how far a layer's raw tails reach, learned like TCP's
// congestion window. The first tail reaches rawTailStart; each read that
// takes its chunks from the spool doubles the budget, up to
// WithReadAhead's; a tail that no read took from by the time the next tail
// is sent halves it, down to rawTailStart again.
//
// Why it is learned: in a layer whose files start-up reads one after
// another (a Python package's modules) the tails are what make it fast, the
// more so the longer they are, while in a layer of which start-up reads a
// few scattered files (the shared libraries of a base image) they are bytes
// taken from the link that no read uses. A fixed 1 MiB fetched 12 MB of
// those before the JVM image was ready. Halving from the full budget, or
// judging tails by the share of their bytes read, was tried: a layer whose
// first tails go unread then never gets long ones back, and scipy took
// twice as long (docs/design.md, "Data path"). Starting short and growing
// with every read a tail served gives long tails to the layers that use
// them after a few reads. Replayed on the start-up traces of the benchmark
// images (script/replay-tails.py: files opened, in order, against their
// TOCs), it cut the tail bytes of the node and JVM images from 11.1 and
// 12.2 MB to 2.9 and 2.5 MB, and scipy's misses from 160 to 112.
type tailBudget struct {
	mu     sync.Mutex
	cur    int64 // 0 until the first tail
	unread bool  // no read took from the spool since the last tail was sent
}

// rawTailStart is the first tail's budget, and the least a budget halves
// to: a few small files, a round trip's worth of bytes at 50 Mbit/s.
const rawTailStart = 128 << 10

// next is the budget of the next tail, at most limit.
func (b *tailBudget) next(limit int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	floor := min(limit, rawTailStart)
	switch {
	case b.cur == 0:
		return floor
	case b.unread:
		return max(floor, b.cur/2)
	default:
		return min(limit, b.cur)
	}
}

// sent records that a tail with the budget next gave was sent.
func (b *tailBudget) sent(budget int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cur, b.unread = budget, true
}

// taken records a read that took chunks from the spool.
func (b *tailBudget) taken(limit int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur > 0 {
		b.cur = min(limit, b.cur*2)
	}
	b.unread = false
}

// minRawTail is the least tail worth spooling: less holds no file worth a
// round trip.
const minRawTail = 4 << 10

// fetchRunRawAhead fetches run, whose first own chunks are the read's and
// the rest its chunk window (withWindow), with one request that goes on to
// tailEnd, and returns once the read's chunks are stored (or failed); the
// rest streams on, the tail into the spool, under the layer's context,
// ending at the read's deadline (see fetchRunAhead, whose contract it
// shares). done is called when the stream ends.
func (l *Layer) fetchRunRawAhead(ctx context.Context, run []target, own int, tailEnd int64, done func()) error {
	rctx, cancel := l.aheadContext(ctx)
	ownDone := make(chan error, 1)
	go func() {
		defer l.streams.end()
		defer done()
		defer cancel(nil)
		err := l.fetchRunSplit(rctx, run, classRead, own, tailEnd, func(err error) { ownDone <- err })
		if err != nil && !isContextErr(err) {
			l.opts.logger.Debug("read-ahead stopped", "layer", l.Digest(), "error", err)
		}
	}()
	return awaitOwn(ctx, ownDone, cancel)
}

// fromSpool stores the chunks of ts (all claimed by the caller) whose
// frames the spool holds or a request in flight is writing, waiting for
// the latter, and returns the others. Each chunk is checked against its
// digest as a fetched one is; a frame that does not decode is left for the
// caller to fetch.
func (l *Layer) fromSpool(ctx context.Context, ts []target) []target {
	if l.spool == nil || len(ts) == 0 {
		return ts
	}
	var rest []target
	var buf []byte
	took := false
	for _, frame := range frames(ts) {
		c := frame[0].chunk()
		if !l.spool.await(ctx, c.BlobOffset, c.BlobEnd) {
			rest = append(rest, frame...)
			continue
		}
		buf = grow(buf, c.BlobEnd-c.BlobOffset)
		done := 0
		err := l.spool.readAt(buf, c.BlobOffset)
		if err == nil {
			err = l.readFrame(bytes.NewReader(buf), int64(len(buf)), frame, func() {
				t := frame[done]
				l.opts.flights.finish(t.key(), t.fl, nil)
				done++
			})
		}
		if err != nil {
			// Bad bytes in a tail, or punched by the stream passing:
			// fetch the frame, and spool what the fetch brings instead.
			l.opts.logger.Debug("spooled frame not used", "layer", l.Digest(), "offset", c.BlobOffset, "error", err)
			l.spool.discard(c.BlobOffset, c.BlobEnd)
			rest = append(rest, frame[done:]...)
			continue
		}
		l.stats.readSpooled.Add(int64(done))
		took = took || done > 0
	}
	if took {
		l.tails.taken(l.opts.readAhead)
	}
	return rest
}

// frames sorts ts in blob order and groups the chunks that share a
// compressed frame.
func frames(ts []target) [][]target {
	sortTargets(ts)
	var out [][]target
	for i := 0; i < len(ts); {
		j := i + 1
		for j < len(ts) && ts[j].chunk().BlobOffset == ts[i].chunk().BlobOffset {
			j++
		}
		out = append(out, ts[i:j])
		i = j
	}
	return out
}
