package layer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/lazysnap/lazysnap/fs/index"
)

// maxReadAheadChunks bounds the chunks one read-ahead claims, whatever the
// budget: each holds its file's cache entry open until the stream ends, and
// a layer of tiny files would otherwise open thousands at once.
const maxReadAheadChunks = 512

// readAhead claims, for a read whose last chunk (in blob order) is from,
// the chunks stored right after it in the blob that are neither present
// nor being fetched, up to the read-ahead budget of compressed bytes past
// from's frame. In images the files after a file in the tar are its
// neighbours in its directory or package, which a starting program tends
// to open next, one round trip each: reading them in the same request
// costs little more than the bytes.
//
// It stops at the first chunk of from's own file: a large file's further
// chunks are the kernel's read-ahead to ask for (so a 1-byte read of a
// large file still fetches one chunk), and at the first chunk present or
// claimed: the bytes after it were most likely fetched with it already.
// The chunks are claimed as prefetch flights, so a reader waits for them
// only while the stream flows close to them (worthWaiting). done closes the
// files opened for the chunks; the caller calls it when the stream ends.
//
// The tail also stops after the number of files raModel allows: what the
// stream stores within one round trip of this layer's reads.
func (l *Layer) readAhead(from target) (tail []target, files map[index.ID]*File, done func()) {
	files = map[index.ID]*File{}
	done = func() {
		for _, f := range files {
			f.Close()
		}
	}
	end := from.chunk().BlobEnd
	id, i := from.f.id, from.i
	maxFiles := l.ra.maxFiles()
	for len(tail) < maxReadAheadChunks {
		var ok bool
		if id, i, ok = l.idx.BlobNext(id, i); !ok || id == from.f.id {
			break
		}
		c := l.idx.Chunks(id)[i]
		if c.BlobEnd-end > l.opts.readAhead {
			break
		}
		f := files[id]
		if f == nil {
			if len(files) == maxFiles {
				break
			}
			var err error
			if f, err = l.OpenFile(id); err != nil {
				break // read-ahead is a bet: it never fails a read
			}
			files[id] = f
		}
		t, ok := l.claimPrefetch(f, i)
		if !ok {
			break
		}
		tail = append(tail, t)
	}
	return tail, files, done
}

// claimPrefetch claims chunk i of f as a prefetch flight, unless it is
// present (which it records) or someone else is fetching it.
func (l *Layer) claimPrefetch(f *File, i int) (target, bool) {
	c := f.chunks[i]
	if f.entry.Has(c.FileOffset, c.Size) {
		l.present.mark(f.id, i, c.Size)
		return target{}, false
	}
	t := target{f: f, i: i}
	fl, own := l.opts.flights.claim(t.key(), classPrefetch, c.BlobOffset)
	if !own {
		return target{}, false
	}
	t.fl = fl
	return t, true
}

// fetchRunAhead fetches run, whose first own chunks are the read's and the
// rest read-ahead, with one request, and returns once the read's chunks are
// stored (or failed): the request goes on streaming the read-ahead chunks
// on its own, under the layer's context, so the read never waits for them.
// done is called when the stream ends.
//
// If ctx ends before the read's chunks are stored, the request is
// cancelled (with ctx's cause) and the read fails with ctx's error, not
// with the request's cancellation: fs/node answers context.Canceled with
// EINTR, which readers retry at once, so a read past its deadline would
// otherwise be retried forever, each retry another read-ahead request
// cancelled at its deadline.
// Once the read's chunks are stored the stream goes on, but no longer than
// ctx's deadline (the read's), so that a tail on a slow registry does not
// hold a request slot, or flights other reads wait for, long after its read.
//
// It feeds raModel: the time to the read's own chunks is a round trip, and
// the rest of a stream that ran to its end is the cost of tailFiles files.
func (l *Layer) fetchRunAhead(ctx context.Context, run []target, own, tailFiles int, done func()) error {
	rctx, cancel := l.aheadContext(ctx)
	ownDone := make(chan error, 1)
	go func() {
		defer l.streams.end()
		defer done()
		defer cancel(nil)
		start := time.Now()
		var ownAt time.Time
		err := l.fetchRunSplit(rctx, run, classRead, own, 0, func(err error) {
			if err == nil {
				ownAt = time.Now()
				l.ra.observeRoundTrip(ownAt.Sub(start))
			}
			ownDone <- err
		})
		if err == nil && !ownAt.IsZero() {
			l.ra.observeTail(time.Since(ownAt), tailFiles)
		}
		if err != nil && !isContextErr(err) {
			l.opts.logger.Debug("read-ahead stopped", "layer", l.Digest(), "error", err)
		}
	}()
	return awaitOwn(ctx, ownDone, cancel)
}

// awaitOwn returns once a read-ahead request reports on ownDone that the
// read's own chunks are stored (or failed), or, when the read's ctx ends
// first, cancels the request with ctx's cause and fails with ctx's error.
func awaitOwn(ctx context.Context, ownDone <-chan error, cancel context.CancelCauseFunc) error {
	select {
	case err := <-ownDone:
		return err
	case <-ctx.Done():
		cancel(context.Cause(ctx))
		// The read's File must outlive the writes into its entry.
		if err := <-ownDone; err == nil {
			return nil // stored just as ctx ended
		}
		return fmt.Errorf("request with read-ahead for the read's chunks: %w", ctx.Err())
	}
}

// aheadContext returns the context of a read-ahead request for the read
// whose context is ctx: the layer's (the request outlives the read), ending
// at the read's deadline too.
func (l *Layer) aheadContext(ctx context.Context) (context.Context, context.CancelCauseFunc) {
	rctx, cancel := context.WithCancelCause(l.ctx)
	deadline, ok := ctx.Deadline()
	if !ok {
		return rctx, cancel
	}
	rctx, stop := context.WithDeadlineCause(rctx, deadline, errReadAheadDeadline)
	return rctx, func(cause error) {
		cancel(cause)
		stop()
	}
}

// errReadAheadDeadline ends a read-ahead request still streaming at its
// read's deadline.
var errReadAheadDeadline = fmt.Errorf("read-ahead ran to its read's deadline: %w", context.DeadlineExceeded)

// streams counts the read-ahead streams still running, so that Close waits
// for them to close their cache entries before it drops the layer's holds.
type streams struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// begin records a stream, unless the layer is closing.
func (s *streams) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *streams) end() { s.wg.Done() }

// close refuses new streams and waits for the running ones.
func (s *streams) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}
