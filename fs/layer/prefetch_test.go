package layer

import (
	"fmt"
	"slices"
	"testing"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// TestPrefetchFilesRanges: a traced file with ranges is prefetched only in
// the chunks overlapping them, a file without whole; the rest of the
// ranged file is fetched when read.
func TestPrefetchFilesRanges(t *testing.T) {
	tl := buildTestLayer(t, testChunk,
		testFile{"big", randomData(16*testChunk, 1)},
		testFile{"small", randomData(3*testChunk, 2)},
		testFile{"other", randomData(testChunk, 3)})
	l := tl.open(t)
	ranges := map[string][]prefetchlist.Range{"/big": {
		{Start: 10, End: testChunk + 1},              // chunks 0 and 1
		{Start: 8 * testChunk, End: 8*testChunk + 1}, // chunk 8
	}}
	if err := l.PrefetchFiles(t.Context(), []string{"/big", "/small", "/absent"}, ranges); err != nil {
		t.Fatal(err)
	}
	big, small := tl.id(t, l, "big"), tl.id(t, l, "small")
	var want int64
	for i, c := range l.Index().Chunks(big) {
		if i == 0 || i == 1 || i == 8 {
			want += c.BlobEnd - c.BlobOffset
		}
	}
	for _, c := range l.Index().Chunks(small) {
		want += c.BlobEnd - c.BlobOffset
	}
	fetches, served := tl.blob.served()
	// A request may read through a gap of up to WithMaxGapBytes (tar
	// headers), never through the 6 or 7 chunks (over 256 KiB) around chunk 8.
	if served < want || served > want+4<<10 {
		t.Errorf("prefetch served %d bytes in %v, want about %d (chunks 0, 1, 8 of big, all of small)", served, fetches, want)
	}
	if st := l.Stats(); st.ChunksPresent != 3+3 {
		t.Errorf("%d chunks present after the prefetch, want 6", st.ChunksPresent)
	}
	before := len(fetches)
	for _, name := range []string{"big", "small", "other"} {
		if err := tl.readAll(t, l, name); err != nil {
			t.Fatal(err)
		}
	}
	if n := tl.blob.fetchCount() - before; n == 0 {
		t.Error("reading the rest of big and other fetched nothing")
	}
}

func TestOverlaps(t *testing.T) {
	rs := []prefetchlist.Range{{Start: 10, End: 20}, {Start: 30, End: 40}}
	for _, c := range []struct {
		start, end int64
		want       bool
	}{{0, 10, false}, {0, 11, true}, {19, 25, true}, {20, 30, false}, {25, 35, true}, {39, 50, true}, {40, 50, false}, {0, 100, true}} {
		if got := overlaps(rs, c.start, c.end); got != c.want {
			t.Errorf("overlaps(%v, %d, %d) = %v, want %v", rs, c.start, c.end, got, c.want)
		}
	}
}

// TestPrefetchFilesInListOrder: a list's files, scattered through the layer,
// come in the requests blob order makes of them (one per file here, the
// files between them too large to read through), sent in the order the
// list names the files: the file a start-up opens first comes first,
// wherever the image stores it.
func TestPrefetchFilesInListOrder(t *testing.T) {
	t.Parallel()
	const size, between = 8 * testChunk, 16 * testChunk // 512 KiB listed, 1 MiB not, random
	tl := buildTestLayer(t, testChunk,
		testFile{"a", randomData(size, 1)}, testFile{"x", randomData(between, 4)},
		testFile{"b", randomData(size, 2)}, testFile{"y", randomData(between, 5)},
		testFile{"c", randomData(size, 3)})
	l := tl.open(t, WithConcurrency(1))
	if err := l.PrefetchFiles(t.Context(), []string{"/c", "/a", "/b"}, nil); err != nil {
		t.Fatal(err)
	}
	first := func(name string) int64 { return l.Index().Chunks(tl.id(t, l, name))[0].BlobOffset }
	fetches, _ := tl.blob.served()
	var order []string
	for _, f := range fetches {
		for _, name := range []string{"a", "b", "c", "x", "y"} {
			if f[0] == first(name) {
				order = append(order, name)
			}
		}
	}
	if want := []string{"c", "a", "b"}; !slices.Equal(order, want) {
		t.Errorf("requests started at the files %v (fetches %v), want %v: the list's order", order, fetches, want)
	}
	if st := l.Stats(); st.ChunksPresent != 3*8 {
		t.Errorf("%d chunks present after the prefetch, want %d", st.ChunksPresent, 3*8)
	}
}

// TestFetchRankedKeepsRequests: ranked by a list, a prefetch sends the
// same requests as in blob order, only in the list's order.
func TestFetchRankedKeepsRequests(t *testing.T) {
	t.Parallel()
	var files []testFile
	var paths []string
	for i := range 6 {
		files = append(files, testFile{fmt.Sprintf("f%d", i), randomData(4*testChunk, uint64(i))},
			testFile{fmt.Sprintf("gap%d", i), randomData(8*testChunk, uint64(100+i))})
		paths = append(paths, fmt.Sprintf("/f%d", i))
	}
	tl := buildTestLayer(t, testChunk, files...)
	requests := func(paths []string) [][2]int64 {
		before, _ := tl.blob.served()
		if err := tl.open(t, WithConcurrency(1)).PrefetchFiles(t.Context(), paths, nil); err != nil {
			t.Fatal(err)
		}
		after, _ := tl.blob.served()
		return after[len(before):]
	}
	inBlobOrder := requests(paths)
	slices.Reverse(paths)
	ranked := requests(paths)
	if len(inBlobOrder) != 6 {
		t.Fatalf("%d requests in blob order (%v), want 6: one per listed file", len(inBlobOrder), inBlobOrder)
	}
	slices.Reverse(ranked)
	if !slices.Equal(ranked, inBlobOrder) {
		t.Errorf("requests ranked by the reversed list, reversed: %v, want those of blob order %v", ranked, inBlobOrder)
	}
}
