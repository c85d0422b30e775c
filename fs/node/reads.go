package node

import (
	"sync/atomic"

	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// RangedMinSize is the size from which the reads of a file of more than
// one chunk are recorded as byte ranges (WithReadRanges). A smaller file is
// prefetched whole: that costs less than a round trip more than its read
// part on a link of 200 Mbit/s and 20 ms (500 KB in flight), and keeps the
// trace short. A single-chunk file cannot be fetched in part at all. It is
// prefetchlist's, which the converter and the recorder use too.
const RangedMinSize = prefetchlist.RangedMinSize

// readSet records which chunks of a layer's large files were read: one
// atomic bit per chunk of the layer, set by the read path (a load when
// already set) and turned into byte ranges only when the trace is saved.
type readSet struct {
	idx  *index.Index
	bits []atomic.Uint64
}

func newReadSet(idx *index.Index) *readSet {
	return &readSet{idx: idx, bits: make([]atomic.Uint64, (idx.NumChunks()+63)/64)}
}

// ranged reports whether the reads of regular file id are recorded.
func ranged(idx *index.Index, id index.ID) bool {
	cs := idx.Chunks(id)
	return len(cs) > 1 && cs[len(cs)-1].End() >= RangedMinSize
}

// read records a read of n bytes at off of regular file id: the chunks
// that hold them. Kernel read-ahead and mmap faults arrive here too, as
// they should: the next start needs those bytes as well.
func (s *readSet) read(id index.ID, off, n int64) {
	if !ranged(s.idx, id) {
		return
	}
	lo, hi := s.idx.ChunkRange(id, off, n)
	base := s.idx.ChunkBase(id)
	for k := base + lo; k < base+hi; k++ {
		w, bit := &s.bits[k/64], uint64(1)<<(k%64)
		if w.Load()&bit == 0 {
			w.Or(bit)
		}
	}
}

// ranges returns the byte ranges read of each large file with any, by its
// path: the chunks read, neighbours joined.
func (s *readSet) ranges(path func(index.ID) string) map[string][]prefetchlist.Range {
	out := map[string][]prefetchlist.Range{}
	for id := range s.idx.RegularFiles() {
		if !ranged(s.idx, id) {
			continue
		}
		if rs := s.fileRanges(id); len(rs) > 0 {
			out[path(id)] = rs
		}
	}
	return out
}

func (s *readSet) fileRanges(id index.ID) []prefetchlist.Range {
	var rs []prefetchlist.Range
	base := s.idx.ChunkBase(id)
	for i, c := range s.idx.Chunks(id) {
		k := base + i
		if s.bits[k/64].Load()&(uint64(1)<<(k%64)) == 0 {
			continue
		}
		if n := len(rs); n > 0 && rs[n-1].End == c.FileOffset {
			rs[n-1].End = c.End()
			continue
		}
		rs = append(rs, prefetchlist.Range{Start: c.FileOffset, End: c.End()})
	}
	return rs
}
