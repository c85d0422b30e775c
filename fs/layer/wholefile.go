package layer

import (
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/lazysnap/lazysnap/fs/index"
)

// Whole files on the second miss. A program that maps a shared library or
// a data file of a few chunks (libjvm.so, classes.jsa, an ICU table) faults
// its pages in an order no read-ahead predicts, and each fault on a chunk
// not yet fetched waits a round trip for it while nothing else is on the
// link: the JVM image's start-up without a list was 35 such requests one
// after another. A file that missed twice is most likely read through,
// so its other chunks are fetched at once, at prefetch priority, while the
// workload goes on.
//
// The rest goes in requests of a read's size, several at once: one
// request is decompressed on one goroutine, which at 1 Gbit/s is slower
// than the link (TestRestOfFileInReadSizedRequests).
//
// Files larger than wholeMaxBytes are left to their reads: start-up reads
// 48 of the 129 MB of the JVM's module image, and fetching the rest would
// cost more link time than the round trips it saves. So are the files the
// layer's owner knows to be read in a few places (LeaveToReads): node's
// ICU data library, 31 MB of tables of which start-up reads 2 MB, missed
// twice (its header, then its dynamic section at the end) as cc1 does, and
// its rest cost 10 MB of the link at 200 Mbit/s before ready.
const (
	wholeMinChunks = 3
	wholeMaxBytes  = 32 << 20
)

// fileMisses counts the reads of each file that missed.
type fileMisses struct {
	mu sync.Mutex
	n  map[index.ID]uint8
}

// second records a missed read of id and reports whether it is its second.
func (m *fileMisses) second(id index.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == nil {
		m.n = map[index.ID]uint8{}
	}
	if m.n[id] < 2 {
		m.n[id]++
		return m.n[id] == 2
	}
	return false
}

// LeaveToReads tells the layer that regular file id is read in a few
// places, not through: its other chunks are never fetched because two of
// its reads missed (package fs says so of an ELF library that is mostly
// data: what its code looks up in the data is a little of it).
func (l *Layer) LeaveToReads(id index.ID) {
	if l.idx.Valid(id) && l.sparse.first(id) {
		l.stats.leftToReads.Add(1)
	}
}

// fetchRestOnSecondMiss starts fetching the chunks of f outside [lo, hi)
// (the missed read's own, which it fetches itself), at prefetch priority,
// when this read is the second of f that missed and f has wholeMinChunks
// to wholeMaxBytes, and more than wholeMinChunks-1 chunk windows, and was not
// left to its reads (LeaveToReads): a file in
// chunks smaller than the window is judged as if in chunks of the window's
// size, whose reads its windows serve. Like read-ahead, it is off with
// WithReadAhead(0) and while a learned list is being prefetched (the list
// says which parts of a file start-up reads).
//
// The chunks are claimed before it returns, and the requests that start at
// once are marked as sent (markSent; fetchOnce marks them again as it sends
// them): the file's next read, which comes after this one's round trip,
// then finds its chunk at the head of a request already on its way and
// waits for it (worthWaiting) instead of fetching the same bytes again.
func (l *Layer) fetchRestOnSecondMiss(f *File, lo, hi int) {
	small := len(f.chunks) < wholeMinChunks || f.size <= (wholeMinChunks-1)*l.opts.chunkWindow
	if l.opts.readAhead == 0 || l.listed.Load() > 0 || small || f.size > wholeMaxBytes ||
		l.sparse.has(f.id) || !l.misses.second(f.id) || !l.streams.begin() {
		return
	}
	own, runs := l.claimRest(f, lo, hi)
	if len(runs) == 0 {
		l.streams.end()
		return
	}
	l.stats.wholeFiles.Add(1)
	conc := l.opts.concurrency
	for _, run := range runs[:min(conc, len(runs))] {
		markSent(run)
	}
	go func() {
		defer l.streams.end()
		defer own.Close()
		var g errgroup.Group
		g.SetLimit(conc)
		for _, run := range runs {
			g.Go(func() error { return l.fetchRun(l.ctx, run, classPrefetch) })
		}
		if err := g.Wait(); err != nil && !isContextErr(err) {
			l.opts.logger.Debug("fetching the rest of a file stopped", "layer", l.Digest(), "inode", f.id, "error", err)
		}
	}()
}

// claimRest opens f again (the caller's handle may close before the fetch
// ends) and claims its chunks outside [lo, hi) that are neither present
// nor being fetched, grouped into prefetch requests. With nothing to
// fetch it returns no runs, and no open file.
func (l *Layer) claimRest(f *File, lo, hi int) (*File, [][]target) {
	own, err := l.OpenFile(f.id)
	if err != nil {
		return nil, nil // a bet: it never fails the read
	}
	var ts []target
	for i := range own.chunks {
		if i >= lo && i < hi {
			continue
		}
		if t, ok := l.claimPrefetch(own, i); ok {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		own.Close()
		return nil, nil
	}
	// Requests as large as a read's, as many at once as a read's: each
	// request is decompressed on one goroutine, and at 1 Gbit/s one
	// goroutine decodes a large file (cc1, 10 MB) more slowly than the link
	// brings it.
	return own, coalesce(ts, l.opts.maxRequestBytes, l.opts.maxGapBytes)
}
