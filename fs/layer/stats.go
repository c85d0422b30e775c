package layer

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/index"
)

// Stats are a layer's counters, ready for the daemon to export.
type Stats struct {
	Digest             digest.Digest
	BytesFetched       int64 // compressed bytes received from the registry
	Requests           int64 // Range requests sent (TOC and footer included)
	BackgroundRequests int64 // of which background ones
	StreamSpooledBytes int64 // compressed bytes the diff_id stream took from the spool instead of the registry
	ReadSpooledChunks  int64 // chunks reads took from the spool (read-ahead tails) instead of the registry
	HeadsFetched       int64 // first chunks fetched for a program about to open the file (FetchHead)
	WholeFiles         int64 // files whose other chunks were fetched because two of their reads missed
	FilesLeftToReads   int64 // files never fetched whole that way, being mostly data (LeaveToReads)
	CacheHits          int64 // reads served from the cache without fetching
	VerifyFailures     int64 // chunks that failed verification (and were refetched or failed the read)
	CacheCorruptions   int64 // chunks cached by an earlier run that failed verification and were dropped
	ChunksPresent      int64 // chunks seen present in the cache
	ChunksTotal        int64
	BytesPresent       int64 // uncompressed bytes of present chunks
	BytesTotal         int64 // uncompressed bytes of every file
	FetchedPercent     float64
	PrefetchDone       bool
	PrefetchDoneAt     time.Time `json:",omitzero"`
	BackgroundDone     bool      // every chunk is in the cache (after FetchAll)
	BackgroundDoneAt   time.Time `json:",omitzero"`
	IndexBytes         int64     // memory the layer's index holds
	IndexInodeCount    int
}

type counters struct {
	bytesFetched       atomic.Int64
	requests           atomic.Int64
	backgroundRequests atomic.Int64
	streamSpooled      atomic.Int64
	readSpooled        atomic.Int64
	headsFetched       atomic.Int64
	wholeFiles         atomic.Int64
	leftToReads        atomic.Int64
	cacheHits          atomic.Int64
	verifyFailures     atomic.Int64
	cacheCorruptions   atomic.Int64
	prefetchDoneAt     atomic.Int64 // unix nanoseconds, 0 until done
	backgroundDoneAt   atomic.Int64
}

// markDone records now in at, once.
func markDone(at *atomic.Int64) { at.CompareAndSwap(0, time.Now().UnixNano()) }

func loadTime(at *atomic.Int64) (time.Time, bool) {
	ns := at.Load()
	if ns == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// Stats returns the layer's counters.
func (l *Layer) Stats() Stats {
	s := Stats{
		Digest:             l.Digest(),
		BytesFetched:       l.stats.bytesFetched.Load(),
		Requests:           l.stats.requests.Load(),
		BackgroundRequests: l.stats.backgroundRequests.Load(),
		StreamSpooledBytes: l.stats.streamSpooled.Load(),
		ReadSpooledChunks:  l.stats.readSpooled.Load(),
		HeadsFetched:       l.stats.headsFetched.Load(),
		WholeFiles:         l.stats.wholeFiles.Load(),
		FilesLeftToReads:   l.stats.leftToReads.Load(),
		CacheHits:          l.stats.cacheHits.Load(),
		VerifyFailures:     l.stats.verifyFailures.Load(),
		CacheCorruptions:   l.stats.cacheCorruptions.Load(),
		IndexBytes:         l.idx.SizeBytes(),
		IndexInodeCount:    l.idx.Len(),
	}
	s.PrefetchDoneAt, s.PrefetchDone = loadTime(&l.stats.prefetchDoneAt)
	s.BackgroundDoneAt, s.BackgroundDone = loadTime(&l.stats.backgroundDoneAt)
	s.ChunksPresent, s.ChunksTotal, s.BytesPresent, s.BytesTotal = l.present.load()
	if s.BytesTotal > 0 {
		s.FetchedPercent = 100 * float64(s.BytesPresent) / float64(s.BytesTotal)
	} else {
		s.FetchedPercent = 100
	}
	return s
}

// presence remembers which chunks of the layer were seen in the cache, one
// bit per chunk of the index's chunk table, to report the fetched share
// without scanning the cache.
type presence struct {
	idx       *index.Index
	mu        sync.Mutex
	bits      []uint64
	chunks    int64
	bytes     int64
	byteTotal int64
}

func (p *presence) init(idx *index.Index) {
	p.idx = idx
	p.bits = make([]uint64, (idx.NumChunks()+63)/64)
	for id := range idx.RegularFiles() {
		p.byteTotal += idx.Attr(id).Size
	}
}

func (p *presence) mark(id index.ID, chunk int, size int64) {
	b := p.idx.ChunkBase(id) + chunk
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bits[b/64]&(1<<(b%64)) != 0 {
		return
	}
	p.bits[b/64] |= 1 << (b % 64)
	p.chunks++
	p.bytes += size
}

func (p *presence) load() (chunks, chunkTotal, bytes, byteTotal int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.chunks, int64(p.idx.NumChunks()), p.bytes, p.byteTotal
}
