package layer

import (
	"fmt"
	"testing"
	"time"
)

// windowed is a layer holding one file of eight chunks, opened with a chunk
// window of four of them (as a file in 1 MiB chunks sees the 4 MiB
// window), with a spool or without.
func windowed(t *testing.T, spooled bool) (*testLayer, *Layer) {
	tl := buildTestLayer(t, testChunk, testFile{"eight", randomData(8*testChunk, 4)})
	opts := []Option{WithChunkWindow(4 * testChunk), WithReadAhead(0)}
	if spooled {
		return tl, tl.openSpooled(t, opts...)
	}
	return tl, tl.open(t, opts...)
}

// TestChunkWindowServesNextReads: a read of a file in small chunks brings,
// in its own request, the file's chunks up to the window past it, so the
// reads of those send no request; the read past the window sends one. It
// failed (a request per chunk) before reads had a window.
func TestChunkWindowServesNextReads(t *testing.T) {
	for _, spooled := range []bool{true, false} {
		t.Run(fmt.Sprintf("spooled=%v", spooled), func(t *testing.T) {
			tl, l := windowed(t, spooled)
			readChunkAt(t, tl, l, "eight", 0)
			l.streams.wg.Wait()
			for i := int64(1); i < 4; i++ {
				readChunkAt(t, tl, l, "eight", i*testChunk)
			}
			if n := tl.blob.fetchCount(); n != 1 {
				t.Errorf("reading the first 4 chunks sent %d requests, want 1", n)
			}
			readChunkAt(t, tl, l, "eight", 4*testChunk)
			if n := tl.blob.fetchCount(); n != 2 {
				t.Errorf("reading the chunk past the window sent %d requests in all, want 2", n)
			}
			l.streams.wg.Wait()
			if err := tl.readAll(t, l, "eight"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestChunkWindowReadReturnsFirst: the read returns once its own chunk is
// stored, while the rest of its window is still on the wire; a read of a
// chunk in the window meanwhile waits for it rather than asking again.
func TestChunkWindowReadReturnsFirst(t *testing.T) {
	tl, l := windowed(t, true)
	c := l.idx.Chunks(tl.id(t, l, "eight"))[0]
	gate := &tailGateBlob{faultBlob: tl.blob, head: c.BlobEnd - c.BlobOffset, release: make(chan struct{})}
	tl.toc.blob = gate
	first := make(chan error, 1)
	go func() { first <- readOne(t, tl, l, "eight", 0) }()
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the read waited for the rest of its window")
	}
	second := make(chan error, 1)
	go func() { second <- readOne(t, tl, l, "eight", 2*testChunk) }()
	time.Sleep(50 * time.Millisecond)
	close(gate.release)
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	l.streams.wg.Wait()
	if n := tl.blob.fetchCount(); n != 1 {
		t.Errorf("%d requests, want the first read's only", n)
	}
}

// TestChunkWindowStopsAtPresentChunk: the window ends at the first chunk
// the cache holds, so no byte is fetched twice.
func TestChunkWindowStopsAtPresentChunk(t *testing.T) {
	tl, l := windowed(t, false)
	readChunkAt(t, tl, l, "eight", 2*testChunk) // brings chunks 2 to 5
	l.streams.wg.Wait()
	readChunkAt(t, tl, l, "eight", 0) // brings 0 and 1 only
	l.streams.wg.Wait()
	fetches, n := tl.blob.served()
	if len(fetches) != 2 {
		t.Fatalf("%d requests, want 2: %v", len(fetches), fetches)
	}
	chunks := l.idx.Chunks(tl.id(t, l, "eight"))
	if want := chunks[5].BlobEnd - chunks[0].BlobOffset; n != want {
		t.Errorf("fetched %d bytes, want the 6 chunks' %d", n, want)
	}
}

// TestHeadFetchHasWindow: the head a library prefetch fetches (a read
// without a tail) has its window too: the loader reads on past the first
// chunk of a library in small chunks.
func TestHeadFetchHasWindow(t *testing.T) {
	tl, l := windowed(t, true)
	if err := l.FetchHead(t.Context(), tl.id(t, l, "eight")); err != nil {
		t.Fatal(err)
	}
	l.streams.wg.Wait()
	readChunkAt(t, tl, l, "eight", 3*testChunk)
	if n := tl.blob.fetchCount(); n != 1 {
		t.Errorf("%d requests, want the head's only", n)
	}
}

// TestNoWindowForLargeChunks: chunks as large as the window get none, as
// before windows: one chunk per read.
func TestNoWindowForLargeChunks(t *testing.T) {
	tl := buildTestLayer(t, testChunk, testFile{"eight", randomData(8*testChunk, 4)})
	l := tl.openSpooled(t, WithReadAhead(0)) // the window is one chunk
	readChunkAt(t, tl, l, "eight", 0)
	l.streams.wg.Wait()
	readChunkAt(t, tl, l, "eight", testChunk)
	if n := tl.blob.fetchCount(); n != 2 {
		t.Errorf("%d requests for two chunks, want 2", n)
	}
}
