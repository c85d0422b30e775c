package layer

import (
	"sync"

	"github.com/lazysnap/lazysnap/fs/index"
)

// Whole files on the second miss. A program that maps a shared library or
// a data file of a few chunks (libjvm.so, classes.jsa, an ICU table) faults
// its pages in an order no read-ahead predicts, and each fault on a chunk
// not yet fetched waits a round trip for it while nothing else is on the
// link: the JVM image's start-up without a list was 35 such requests one
// after another. A file that missed twice is most likely read through,
// so its other chunks are fetched at once, at prefetch priority, while the
// workload goes on. Measured with `make bench BENCH_ARGS='-images
// jvm,node,scipy -modes lazysnap,lazysnap-baseline -baseline-lazysnap BIN
// -reps 3'` (BIN with it), 200 Mbit/s + 20 ms, medians: jvm 3.08 s against
// 3.29 s, node 2.76 s against 2.91 s, scipy 9.29 s against 9.77 s, with the
// same bytes before ready (node 2.5 MB more).
//
// Files larger than wholeMaxBytes are left to their reads: start-up reads
// 48 of the 129 MB of the JVM's module image, and fetching the rest would
// cost more link time than the round trips it saves.
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

// fetchRestOnSecondMiss starts fetching the rest of f, at prefetch
// priority, when this read is the second of f that missed and f has
// wholeMinChunks to wholeMaxBytes. Like read-ahead, it is off with
// WithReadAhead(0) and while a learned list is being prefetched (the list
// says which parts of a file start-up reads).
func (l *Layer) fetchRestOnSecondMiss(f *File) {
	if l.opts.readAhead == 0 || l.listed.Load() > 0 || len(f.chunks) < wholeMinChunks || f.size > wholeMaxBytes ||
		!l.misses.second(f.id) || !l.streams.begin() {
		return
	}
	id := f.id
	go func() {
		defer l.streams.end()
		p := plan{class: classPrefetch, maxBytes: l.opts.maxPrefetchBytes, maxGap: l.opts.maxGapBytes,
			concurrency: l.opts.concurrency}
		if err := l.fetchWhere(l.ctx, p, func(i index.ID, _ index.Chunk) bool { return i == id }); err != nil && !isContextErr(err) {
			l.opts.logger.Debug("fetching the rest of a file stopped", "layer", l.Digest(), "inode", id, "error", err)
		}
	}()
}
