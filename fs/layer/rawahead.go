package layer

import (
	"bytes"
	"context"
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
	end := l.spool.free(lo, min(lo+l.opts.readAhead, l.toc.blob.Size()))
	if end-lo < minRawTail {
		return 0
	}
	return end
}

// minRawTail is the least tail worth spooling: less holds no file worth a
// round trip.
const minRawTail = 4 << 10

// fetchRunRawAhead fetches run, the read's own chunks, with one request
// that goes on to tailEnd, and returns once the read's chunks are stored
// (or failed); the rest streams on into the spool under the layer's
// context, ending at the read's deadline (see fetchRunAhead, whose
// contract it shares).
func (l *Layer) fetchRunRawAhead(ctx context.Context, run []target, tailEnd int64) error {
	rctx, cancel := l.aheadContext(ctx)
	ownDone := make(chan error, 1)
	go func() {
		defer l.streams.end()
		defer cancel(nil)
		err := l.fetchRunSplit(rctx, run, classRead, len(run), tailEnd, func(err error) { ownDone <- err })
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
			err = l.readFrame(bytes.NewReader(buf), frame, func() {
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
