package layer

import (
	"testing"
	"time"
)

// readChunkAt reads one byte at off of file name through l.
func readChunkAt(t *testing.T, tl *testLayer, l *Layer, name string, off int64) {
	t.Helper()
	if err := readOne(t, tl, l, name, off); err != nil {
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
// second with read-ahead off or of a file left to its reads.
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

	sparse := tl.open(t)
	sparse.LeaveToReads(tl.id(t, sparse, "five"))
	readChunkAt(t, tl, sparse, "five", 0)
	readChunkAt(t, tl, sparse, "five", 3*testChunk)
	sparse.streams.wg.Wait()
	if complete(t, tl, sparse, "five") {
		t.Error("two missed reads brought the whole of a file left to its reads")
	}
}

// TestRestOfFileFetchedOnce: the file's next read, coming while the request
// for the rest of the file is sent but not yet answered, waits for that
// request instead of fetching its chunk again: the registry serves every
// byte of the file once. It failed (a fourth, overlapping request) when
// readers only waited for a stream that flowed.
func TestRestOfFileFetchedOnce(t *testing.T) {
	tl := buildTestLayer(t, testChunk,
		testFile{"eight", randomData(8*testChunk, 2)},
	)
	l := tl.open(t)
	readChunkAt(t, tl, l, "eight", 0)

	tl.blob.mu.Lock()
	tl.blob.gate, tl.blob.began = make(chan struct{}), make(chan struct{}, 10)
	tl.blob.mu.Unlock()
	second := make(chan error, 1)
	go func() { second <- readOne(t, tl, l, "eight", testChunk) }()
	<-tl.blob.began // the read's own request
	<-tl.blob.began // the rest of the file
	third := make(chan error, 1)
	go func() { third <- readOne(t, tl, l, "eight", 2*testChunk) }()
	select {
	case <-tl.blob.began:
		t.Error("the next read sent a request of its own for a chunk already requested")
	case <-time.After(200 * time.Millisecond):
	}
	close(tl.blob.gate)
	for _, ch := range []chan error{second, third} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	l.streams.wg.Wait()
	if err := tl.readAll(t, l, "eight"); err != nil {
		t.Fatal(err)
	}
	fetches, _ := tl.blob.served()
	if len(fetches) != 3 {
		t.Errorf("%d requests for a file read in order, want 3 (first chunk, second, the rest): %v", len(fetches), fetches)
	}
	for i, a := range fetches {
		for _, b := range fetches[i+1:] {
			if a[0] < b[0]+b[1] && b[0] < a[0]+a[1] {
				t.Errorf("requests [%d, +%d) and [%d, +%d) overlap: bytes served twice", a[0], a[1], b[0], b[1])
			}
		}
	}
}

// readOne reads one byte at off of file name through l.
func readOne(t *testing.T, tl *testLayer, l *Layer, name string, off int64) error {
	_, err := l.ReadAt(t.Context(), tl.id(t, l, name), make([]byte, 1), off)
	return err
}

// TestRestOfFileInReadSizedRequests: the rest of a file larger than a
// read's request is fetched in requests of at most that size, sent at once,
// so that their decompression runs on every core. It failed (one request
// of the whole rest) when the rest was coalesced up to the prefetch size.
func TestRestOfFileInReadSizedRequests(t *testing.T) {
	tl := buildTestLayer(t, testChunk,
		testFile{"twelve", randomData(12*testChunk, 3)},
	)
	// Random data does not compress: a chunk's frame is a little larger
	// than the chunk, so at most two chunks fit in a request.
	maxReq := int64(2*testChunk + testChunk/2)
	l := tl.open(t, WithMaxRequestBytes(maxReq), WithConcurrency(8))
	readChunkAt(t, tl, l, "twelve", 0)
	readChunkAt(t, tl, l, "twelve", 6*testChunk)
	l.streams.wg.Wait()
	if !complete(t, tl, l, "twelve") {
		t.Fatal("the second missed read did not bring the rest of the file")
	}
	// Two requests of the reads' own chunks, and the other ten chunks.
	fetches, _ := tl.blob.served()
	if len(fetches) < 2+5 {
		t.Errorf("%d requests, want at least 2 for the reads and 5 of at most %d bytes for the rest: %v",
			len(fetches), maxReq, fetches)
	}
	for _, f := range fetches {
		if f[1] > maxReq {
			t.Errorf("a request asked for %d bytes, more than a read's %d", f[1], maxReq)
		}
	}
}
