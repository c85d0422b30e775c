package layer

import (
	"testing"
	"time"
)

// readChunkAt reads one byte at off of file name through l.
func readChunkAt(t *testing.T, tl *testLayer, l *Layer, name string, off int64) {
	t.Helper()
	if _, err := l.ReadAt(t.Context(), tl.id(t, l, name), make([]byte, 1), off); err != nil {
		t.Fatal(err)
	}
}

// complete reports whether every chunk of file name is in the cache.
func complete(t *testing.T, tl *testLayer, l *Layer, name string) bool {
	t.Helper()
	f, err := l.OpenFile(tl.id(t, l, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return f.Complete()
}

// TestRestOfFileOnSecondMiss: the second read of a file of a few chunks
// that misses brings the rest of the file; the first does not, nor the
// second with read-ahead off.
func TestRestOfFileOnSecondMiss(t *testing.T) {
	tl := buildTestLayer(t, testChunk,
		testFile{"five", randomData(5*testChunk, 1)},
	)
	l := tl.open(t)
	readChunkAt(t, tl, l, "five", 0)
	l.streams.wg.Wait()
	if complete(t, tl, l, "five") {
		t.Fatal("one read of a chunk brought the whole file")
	}
	readChunkAt(t, tl, l, "five", 3*testChunk)
	deadline := time.Now().Add(10 * time.Second)
	for !complete(t, tl, l, "five") {
		if time.Now().After(deadline) {
			t.Fatal("the second missed read did not bring the rest of the file")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tl.readAll(t, l, "five"); err != nil {
		t.Fatal(err)
	}

	off := tl.open(t, WithReadAhead(0))
	readChunkAt(t, tl, off, "five", 0)
	readChunkAt(t, tl, off, "five", 2*testChunk)
	off.streams.wg.Wait()
	if complete(t, tl, off, "five") {
		t.Error("with read-ahead off, two missed reads brought the whole file")
	}
}
