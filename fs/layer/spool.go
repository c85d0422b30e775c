package layer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A spool keeps the raw compressed bytes of the layer's blob that fetches
// (reads, read-ahead tails, prefetch, the TOC and footer) received ahead of
// StreamAll's position, so that the stream takes them from a local file
// instead of fetching them a second time (see produceStream). Without it
// every byte a read fetched before the stream came by was fetched twice.
//
// The file is unlinked at once: nothing outlives the process, and nothing
// is left to clean after a crash. Bytes behind the stream's position are
// punched out, and the whole file is closed when the stream ends
// (StreamAll), when it is not going to run (DropSpool) or with the layer.
//
// Trust: a range is kept only once the request that brought it ended
// without a verification or transport error (or was cut by cancellation,
// keeping what it received), and only by the one fetch that claimed it, so
// bytes of a request that failed never reach the stream, and never
// overwrite bytes kept from another. The stream hashes spooled bytes like
// fetched ones, so a spooled byte that rots on disk fails the blob digest
// (ErrUnavailable, retried at the next mount), never the diff_id.
//
// Spooling never fails a fetch: a write error (ENOSPC) only stops the
// spooling of that request's range. Safe for concurrent use.
type spool struct {
	f      spoolFile
	logger *slog.Logger
	pos    atomic.Int64 // the stream's position: nothing before it is kept

	mu      sync.Mutex
	have    spans // written by a fetch that ended well: the stream may read them
	busy    spans // claimed by fetches in flight
	punched int64 // the file holds no data before this offset
	closed  bool

	// Reads take their chunks from the spool too (see fromSpool), also
	// from a request still receiving them (a read-ahead tail): a read
	// checks every chunk's digest, so it needs no trust in the bytes.
	writers map[*spoolWriter]struct{} // requests in flight
	changed chan struct{}             // closed and replaced when a writer progresses or ends
	waiting atomic.Int32              // reads waiting for a writer (see await)
}

// spoolFile is what a spool needs of its file (tests inject failures).
type spoolFile interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
}

// openSpool creates an unlinked spool file in dir.
func openSpool(dir string, logger *slog.Logger) (*spool, error) {
	f, err := os.CreateTemp(dir, "spool-*")
	if err != nil {
		return nil, fmt.Errorf("creating a spool file: %w", err)
	}
	// Another process starting may have swept it already: fine either way.
	if err := os.Remove(f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.Close()
		return nil, fmt.Errorf("unlinking the spool file: %w", err)
	}
	return newSpool(f, logger), nil
}

func newSpool(f spoolFile, logger *slog.Logger) *spool {
	return &spool{f: f, logger: logger, writers: map[*spoolWriter]struct{}{}, changed: make(chan struct{})}
}

// spoolWriter tees the body of one request into the spool: it writes only
// the parts of the request it claimed (those neither kept nor claimed by
// another fetch), and keeps them or drops them when the request ends.
type spoolWriter struct {
	s      *spool
	own    []span       // claimed, sorted
	end    atomic.Int64 // every owned byte received before end was written
	failed atomic.Bool  // a write failed: the rest is not spooled
}

// claim returns the writer of a request for [lo, hi), or nil (a writer
// that does nothing) when there is no spool or nothing to claim.
func (s *spool) claim(lo, hi int64) *spoolWriter {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	var own []span
	for _, g := range s.have.gaps(max(lo, s.pos.Load()), hi) {
		own = append(own, s.busy.gaps(g.lo, g.hi)...)
	}
	if len(own) == 0 {
		return nil
	}
	for _, o := range own {
		s.busy = s.busy.add(o.lo, o.hi)
	}
	w := &spoolWriter{s: s, own: own}
	w.end.Store(lo)
	s.writers[w] = struct{}{}
	return w
}

// write spools p, received at blob offset off. Bytes arrive in order, from
// the request's start.
func (w *spoolWriter) write(p []byte, off int64) {
	if w == nil || w.failed.Load() {
		return
	}
	// Bytes the stream has passed are of no use to it.
	from := max(off, w.s.pos.Load())
	to := off + int64(len(p))
	for _, o := range w.own {
		lo, hi := max(o.lo, from), min(o.hi, to)
		if lo >= hi {
			continue
		}
		if _, err := w.s.f.WriteAt(p[lo-off:hi-off], lo); err != nil {
			w.failed.Store(true)
			w.s.logger.Debug("not spooling the rest of a request", "offset", lo, "error", err)
			w.s.notify()
			return
		}
	}
	w.end.Store(to)
	w.s.notify()
}

// notify wakes the reads waiting for a writer, if any.
func (s *spool) notify() {
	if s.waiting.Load() == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notifyLocked()
}

func (s *spool) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// await waits until the spool holds the frame [lo, hi), kept or written by
// a request in flight, and reports true; or reports false at once when no
// request in flight will write all of it, or when ctx ends first.
func (s *spool) await(ctx context.Context, lo, hi int64) bool {
	if s == nil {
		return false
	}
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	for {
		s.mu.Lock()
		ready, coming := s.stateLocked(lo, hi)
		changed := s.changed
		s.mu.Unlock()
		if ready || !coming {
			return ready
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// stateLocked says whether [lo, hi) is in the spool, or is being written
// by one request in flight.
func (s *spool) stateLocked(lo, hi int64) (ready, coming bool) {
	if s.closed || lo < s.pos.Load() {
		return false, false
	}
	if len(s.have.gaps(lo, hi)) == 0 {
		return true, false
	}
	for w := range s.writers {
		if w.failed.Load() {
			continue
		}
		for _, o := range w.own {
			if o.lo <= lo && hi <= o.hi {
				return hi <= w.end.Load(), hi > w.end.Load()
			}
		}
	}
	return false, false
}

// discard drops [lo, hi) from what the spool holds: bytes a read found
// not to verify (a read-ahead tail's bytes are checked only when read), so
// that the read's own fetch spools the right ones in their place, and the
// stream never hashes the wrong ones.
func (s *spool) discard(lo, hi int64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.have = s.have.sub(lo, hi)
}

// free returns the end of the room after lo, up to hi, that the spool
// neither holds nor has claimed for a request in flight: where a read-ahead
// tail from lo should stop. It is lo when the stream has passed lo.
func (s *spool) free(lo, hi int64) int64 {
	if s == nil {
		return lo
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || lo < s.pos.Load() {
		return lo
	}
	if i := s.have.first(lo); i < len(s.have) && s.have[i].lo < hi {
		hi = max(lo, s.have[i].lo)
	}
	if i := s.busy.first(lo); i < len(s.busy) && s.busy[i].lo < hi {
		hi = max(lo, s.busy[i].lo)
	}
	return hi
}

// finish ends the request: with keep, what it wrote becomes readable by
// the stream; otherwise (or for what the stream has passed meanwhile) it
// is punched out.
func (w *spoolWriter) finish(keep bool) {
	if w == nil {
		return
	}
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.writers, w)
	s.notifyLocked()
	pos, end := s.pos.Load(), w.end.Load()
	for _, o := range w.own {
		s.busy = s.busy.sub(o.lo, o.hi)
		kept := span{max(o.lo, pos), min(o.hi, end)}
		if !keep || s.closed || kept.lo >= kept.hi {
			s.punchLocked(o.lo, o.hi)
			continue
		}
		s.have = s.have.add(kept.lo, kept.hi)
		s.punchLocked(o.lo, kept.lo)
		s.punchLocked(kept.hi, o.hi)
	}
}

// put spools data, whole and trusted, at blob offset off.
func (s *spool) put(off int64, data []byte) {
	w := s.claim(off, off+int64(len(data)))
	w.write(data, off)
	w.finish(true)
}

// next tells the stream, at off, how to go on up to end (at most one
// background request further): (n, true) when the spool holds [off, off+n);
// else (n, false) to fetch [off, off+n), which ends where a spooled piece
// worth a request of its own starts. A piece is worth it when it is at
// least minPiece long or reaches end: a shorter one between two gaps is
// fetched again within the request rather than cutting it in two.
func (s *spool) next(off, end, minPiece int64) (n int64, spooled bool) {
	if s == nil {
		return end - off, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := s.have.first(off); i < len(s.have) && s.have[i].lo < end; i++ {
		p := s.have[i]
		switch {
		case p.lo <= off:
			return min(p.hi, end) - off, true
		case p.hi-p.lo >= minPiece || p.hi >= end:
			return p.lo - off, false
		}
	}
	return end - off, false
}

// advance records that the stream reached pos, and drops what lies before.
func (s *spool) advance(pos int64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || pos <= s.pos.Load() {
		return
	}
	s.pos.Store(pos)
	s.have = s.have.sub(0, pos)
	s.punchLocked(s.punched, pos)
	s.punched = pos
}

// readAt reads spooled bytes.
func (s *spool) readAt(p []byte, off int64) error {
	if _, err := s.f.ReadAt(p, off); err != nil {
		return fmt.Errorf("reading %d spooled bytes at %d: %w", len(p), off, err)
	}
	return nil
}

// punchLocked frees the file's blocks of [lo, hi). Best effort: a file
// system without hole punching keeps them until the spool is closed.
func (s *spool) punchLocked(lo, hi int64) {
	f, ok := s.f.(interface{ Fd() uintptr })
	if s.closed || lo >= hi || !ok {
		return
	}
	unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, lo, hi-lo)
}

// close drops every spooled byte. Writers still running fail their next
// write and keep nothing.
func (s *spool) close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.have, s.busy = nil, nil
	s.notifyLocked()
	if err := s.f.Close(); err != nil {
		s.logger.Debug("closing the spool", "error", err)
	}
}

// span is the blob range [lo, hi).
type span struct{ lo, hi int64 }

// spans is a set of blob ranges: sorted, disjoint and not touching.
type spans []span

// first returns the index of the first span ending after off.
func (s spans) first(off int64) int {
	return sort.Search(len(s), func(i int) bool { return s[i].hi > off })
}

// add returns s with [lo, hi) added.
func (s spans) add(lo, hi int64) spans {
	if lo >= hi {
		return s
	}
	i := sort.Search(len(s), func(i int) bool { return s[i].hi >= lo })
	j := i
	for ; j < len(s) && s[j].lo <= hi; j++ {
		lo, hi = min(lo, s[j].lo), max(hi, s[j].hi)
	}
	return slices.Replace(s, i, j, span{lo, hi})
}

// sub returns s without [lo, hi).
func (s spans) sub(lo, hi int64) spans {
	if lo >= hi {
		return s
	}
	i := s.first(lo)
	j := i
	var rest []span
	for ; j < len(s) && s[j].lo < hi; j++ {
		if s[j].lo < lo {
			rest = append(rest, span{s[j].lo, lo})
		}
		if s[j].hi > hi {
			rest = append(rest, span{hi, s[j].hi})
		}
	}
	return slices.Replace(s, i, j, rest...)
}

// gaps returns the parts of [lo, hi) not in s.
func (s spans) gaps(lo, hi int64) []span {
	var out []span
	for i := s.first(lo); i < len(s) && s[i].lo < hi && lo < hi; i++ {
		if s[i].lo > lo {
			out = append(out, span{lo, s[i].lo})
		}
		lo = s[i].hi
	}
	if lo < hi {
		out = append(out, span{lo, hi})
	}
	return out
}

// size returns the bytes s covers.
func (s spans) size() int64 {
	var n int64
	for _, p := range s {
		n += p.hi - p.lo
	}
	return n
}
