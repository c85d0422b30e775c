package layer

import (
	"sync"
	"testing"

	"github.com/lazysnap/lazysnap/fs/index"
)

// TestFetchHeadsTogether: the heads of files stored side by side come in one
// request, those far apart in one each, and every head is reported. Before
// FetchHeads, a binary's libraries went in one request per library, and at
// the test registry each request costs about 5 ms of its CPU whatever its
// size (docs/bench.md, "Where the CPU goes").
func TestFetchHeadsTogether(t *testing.T) {
	tl := buildTestLayer(t, testChunk,
		testFile{"a", randomData(1000, 1)},
		testFile{"b", randomData(2000, 2)},
		testFile{"c", randomData(3000, 3)},
		testFile{"far", randomData(8*testChunk, 4)},
		testFile{"d", randomData(4000, 5)})
	var mu sync.Mutex
	reported := map[index.ID]int{}
	l := tl.open(t, WithReadAhead(0), WithHeadRead(func(_ *Layer, id index.ID, head []byte) {
		mu.Lock()
		reported[id]++
		mu.Unlock()
	}))
	ids := func(names ...string) []index.ID {
		var out []index.ID
		for _, n := range names {
			out = append(out, tl.id(t, l, n))
		}
		return out
	}
	if err := l.FetchHeads(t.Context(), ids("c", "a", "b")); err != nil {
		t.Fatal(err)
	}
	if n := tl.blob.fetchCount(); n != 1 {
		t.Errorf("%d requests for three neighbouring heads, want 1: %v", n, tl.blob.fetches)
	}
	if err := l.FetchHeads(t.Context(), ids("a", "d")); err != nil {
		t.Fatal(err)
	}
	if n := tl.blob.fetchCount(); n != 2 {
		t.Errorf("%d requests after a present head and a far one, want 2: %v", n, tl.blob.fetches)
	}
	for _, n := range []string{"a", "b", "c", "d"} {
		if got := reported[tl.id(t, l, n)]; got != 1 {
			t.Errorf("head of %s reported %d times, want once", n, got)
		}
		buf := make([]byte, 100)
		if _, err := l.ReadAt(t.Context(), tl.id(t, l, n), buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := tl.blob.fetchCount(); n != 2 {
		t.Errorf("reads of fetched heads sent requests: %d in all, want 2", n)
	}
	if st := l.Stats(); st.HeadsFetched != 4 {
		t.Errorf("HeadsFetched = %d, want 4", st.HeadsFetched)
	}
}
