package layer

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestPoolClass(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n     int64
		class int
		ok    bool
	}{
		{0, 0, false},
		{16 << 10, 0, false},
		{16<<10 + 1, 15, true},
		{32 << 10, 15, true},
		{32<<10 + 1, 16, true},
		{4 << 20, 22, true},
		{4<<20 + 1, 23, true},
		{16 << 20, 24, true},
		{16<<20 + 1, 0, false},
	} {
		c, ok := poolClass(tc.n)
		if c != tc.class || ok != tc.ok {
			t.Errorf("poolClass(%d) = %d, %v; want %d, %v", tc.n, c, ok, tc.class, tc.ok)
		}
	}
}

// TestChunkBufsSizes gets buffers of every kind of size, puts each back
// written over, and gets again: each has the length asked for, whatever
// was put before.
func TestChunkBufsSizes(t *testing.T) {
	t.Parallel()
	var p chunkBufs
	sizes := []int64{1, 4 << 10, 40 << 10, 1 << 20, 4<<20 - 3, 4 << 20, 20 << 20}
	for round := 0; round < 2; round++ {
		for _, n := range sizes {
			b := p.get(n)
			if int64(len(b)) != n {
				t.Fatalf("get(%d) has length %d", n, len(b))
			}
			for i := range b {
				b[i] = 0xff
			}
			p.put(b)
		}
	}
	// A buffer put back that get did not make (not a class's capacity) is
	// dropped, not handed out at a smaller capacity than its class.
	p.put(make([]byte, 100<<10))
	if b := p.get(128 << 10); cap(b) != 128<<10 {
		t.Fatalf("get(128 KiB) has capacity %d", cap(b))
	}
}

// TestChunkBufsReuse shows what the pool is for: a 4 MiB chunk's buffer is
// not allocated again for the next chunk (put allocates a slice header).
func TestChunkBufsReuse(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	// A collection empties a sync.Pool; the test's heap is small enough
	// for a 4 MiB allocation to start one.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var p chunkBufs
	p.put(p.get(4 << 20))
	const runs = 100
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		p.put(p.get(4 << 20))
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 1<<10 {
		t.Fatalf("%d bytes allocated per 4 MiB chunk buffer, want under 1 KiB", per)
	}
}
