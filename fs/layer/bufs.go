package layer

import (
	"math/bits"
	"sync"
)

// chunkBufs reuses the buffers chunks are decompressed into before their
// digest is checked and they are written to the cache. A large file's chunk
// is 4 MiB, and a fresh buffer per chunk was half of what fused allocated
// while fetching, each zeroed and faulted in anew (BenchmarkColdRead).
// Buffers are kept by power-of-two size class, for sizes over 16 KiB up to
// 16 MiB; smaller ones come from the allocator's own size classes, larger
// ones (a chunk size lazyconv does not write by default) are not kept.
type chunkBufs struct {
	classes [maxPoolClass - minPoolClass + 1]sync.Pool
}

const (
	minPoolClass = 15 // buffers of 16 KiB + 1 to 32 KiB
	maxPoolClass = 24 // buffers of 8 MiB + 1 to 16 MiB
)

// get returns a buffer of n bytes, with unspecified contents.
func (p *chunkBufs) get(n int64) []byte {
	c, ok := poolClass(n)
	if !ok {
		return make([]byte, n)
	}
	if b, _ := p.classes[c-minPoolClass].Get().(*[]byte); b != nil {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<c)
}

// put gives b back for reuse; b must not be used after.
func (p *chunkBufs) put(b []byte) {
	c, ok := poolClass(int64(cap(b)))
	if !ok || cap(b) != 1<<c {
		return // not one of get's buffers
	}
	b = b[:0]
	p.classes[c-minPoolClass].Put(&b)
}

// poolClass returns the size class of a buffer of n bytes: the smallest c
// with n <= 1<<c, false when no pool keeps such buffers.
func poolClass(n int64) (int, bool) {
	if n <= 1<<(minPoolClass-1) || n > 1<<maxPoolClass {
		return 0, false
	}
	return max(bits.Len64(uint64(n-1)), minPoolClass), true
}
