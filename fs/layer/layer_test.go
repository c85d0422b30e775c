package layer

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

const testChunk = 64 << 10

// threeChunks is a layer of one file of three and a half chunks and a
// small second file.
func threeChunks(t *testing.T) *testLayer {
	return buildTestLayer(t, testChunk,
		testFile{"big", randomData(3*testChunk+testChunk/2, 1)},
		testFile{"small", randomData(1000, 2)})
}

// TestReadFetchesMissingChunksOnce: a read fetches the file's missing
// chunks, neighbours coalesced into one Range request, and a second read
// is served by the cache.
func TestReadFetchesMissingChunksOnce(t *testing.T) {
	tl := threeChunks(t)
	l := tl.open(t)
	if err := tl.readAll(t, l, "big"); err != nil {
		t.Fatal(err)
	}
	if n := tl.blob.fetchCount(); n != 1 {
		t.Fatalf("%d Range requests for four neighbouring chunks, want 1 (%v)", n, tl.blob.fetches)
	}
	if err := tl.readAll(t, l, "big"); err != nil {
		t.Fatal(err)
	}
	if n := tl.blob.fetchCount(); n != 1 {
		t.Errorf("a second read fetched again: %d requests", n)
	}
	if st := l.Stats(); st.CacheHits == 0 {
		t.Errorf("stats %+v: no cache hit counted", st)
	}
}

// TestReadFetchesOnlyMissing: a read over cached and missing chunks
// fetches only the missing ones.
func TestReadFetchesOnlyMissing(t *testing.T) {
	tl := threeChunks(t)
	l := tl.open(t)
	id := tl.id(t, l, "big")
	mid := make([]byte, 10)
	if _, err := l.ReadAt(t.Context(), id, mid, testChunk+5); err != nil {
		t.Fatal(err)
	}
	first := tl.blob.fetches[0]
	if err := tl.readAll(t, l, "big"); err != nil {
		t.Fatal(err)
	}
	for _, f := range tl.blob.fetches[1:] {
		if f[0] < first[0]+first[1] && first[0] < f[0]+f[1] {
			t.Errorf("request %v fetched the cached chunk %v again", f, first)
		}
	}
}

// TestCoalesceBoundedByMaxRequestBytes: with requests capped below a
// chunk, each chunk is a request of its own.
func TestCoalesceBoundedByMaxRequestBytes(t *testing.T) {
	tl := threeChunks(t)
	l := tl.open(t, WithMaxRequestBytes(1))
	if err := tl.readAll(t, l, "big"); err != nil {
		t.Fatal(err)
	}
	if n, want := tl.blob.fetchCount(), len(tl.toc.Index.Chunks(tl.id(t, l, "big"))); n != want {
		t.Errorf("%d requests, want one per chunk (%d)", n, want)
	}
}

// TestConcurrentReadsShareFlights: a read of chunks another read is
// fetching waits for that fetch instead of sending its own.
func TestConcurrentReadsShareFlights(t *testing.T) {
	tl := threeChunks(t)
	tl.blob.gate, tl.blob.began = make(chan struct{}), make(chan struct{}, 10)
	l := tl.open(t)
	errs := make(chan error, 2)
	go func() { errs <- tl.readAll(t, l, "big") }()
	<-tl.blob.began // the first read's request is out
	go func() { errs <- tl.readAll(t, l, "big") }()
	time.Sleep(50 * time.Millisecond) // let the second read find the flights
	close(tl.blob.gate)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := tl.blob.fetchCount(); n != 1 {
		t.Errorf("%d requests for two concurrent reads of the same chunks, want 1", n)
	}
}

// TestCanceledWaiterLeavesFlight: a read that gives up waiting does not
// disturb the fetch it waited for.
func TestCanceledWaiterLeavesFlight(t *testing.T) {
	tl := threeChunks(t)
	tl.blob.gate, tl.blob.began = make(chan struct{}), make(chan struct{}, 10)
	l := tl.open(t)
	errs := make(chan error, 1)
	go func() { errs <- tl.readAll(t, l, "big") }()
	<-tl.blob.began
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	buf := make([]byte, 100)
	if _, err := l.ReadAt(ctx, tl.id(t, l, "big"), buf, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting read: %v, want DeadlineExceeded", err)
	}
	close(tl.blob.gate)
	if err := <-errs; err != nil {
		t.Fatalf("the fetching read: %v", err)
	}
}

// TestBadChunkRefetchedOnce: a chunk that does not verify is fetched once
// more; a second failure fails the read with ErrCorrupt (data loss), and
// nothing wrong is cached.
func TestBadChunkRefetchedOnce(t *testing.T) {
	tl := threeChunks(t)
	tl.blob.corrupt = 1
	l := tl.open(t)
	if err := tl.readAll(t, l, "small"); err != nil {
		t.Fatalf("one bad response: %v", err)
	}
	if n, st := tl.blob.fetchCount(), l.Stats(); n != 2 || st.VerifyFailures != 1 {
		t.Errorf("%d requests, %d verify failures; want 2 and 1", n, st.VerifyFailures)
	}

	tl = threeChunks(t)
	tl.blob.corrupt = 2
	l = tl.open(t)
	err := tl.readAll(t, l, "small")
	if !errors.Is(err, ErrCorrupt) || !errdefs.IsDataLoss(err) {
		t.Fatalf("two bad responses: %v, want ErrCorrupt", err)
	}
	if n := tl.blob.fetchCount(); n != 2 {
		t.Errorf("%d requests, want 2 (one refetch)", n)
	}
	if err := tl.readAll(t, l, "small"); err != nil {
		t.Fatalf("the registry healed, but the read still fails: %v", err)
	}
}

// TestBackgroundWaitsForRead: FetchAll (background class) sends no request
// while a read's request is pending, and finishes after it.
func TestBackgroundWaitsForRead(t *testing.T) {
	tl := threeChunks(t)
	tl.blob.gate, tl.blob.began = make(chan struct{}), make(chan struct{}, 100)
	l := tl.open(t, WithScheduler(NewScheduler(WithQuietPeriod(time.Millisecond))))
	read := make(chan error, 1)
	go func() { read <- tl.readAll(t, l, "small") }()
	<-tl.blob.began
	all := make(chan error, 1)
	go func() { all <- l.FetchAll(t.Context()) }()
	time.Sleep(100 * time.Millisecond)
	if n := tl.blob.fetchCount(); n != 1 {
		t.Fatalf("%d requests while a read was pending, want only the read's", n)
	}
	close(tl.blob.gate)
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if err := <-all; err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); !st.BackgroundDone || st.BackgroundRequests == 0 {
		t.Errorf("stats after FetchAll: %+v", st)
	}
}

// TestStreamAllDiffID: StreamAll decompresses the whole blob to the
// layer's diff_id and fills the cache on the way.
func TestStreamAllDiffID(t *testing.T) {
	tl := threeChunks(t)
	l := tl.open(t)
	got, err := l.StreamAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got != tl.diffID {
		t.Fatalf("StreamAll = %s, want the diff_id %s", got, tl.diffID)
	}
	before := tl.blob.fetchCount()
	for _, f := range tl.files {
		if err := tl.readAll(t, l, f.name); err != nil {
			t.Fatal(err)
		}
	}
	if n := tl.blob.fetchCount(); n != before {
		t.Errorf("reads after StreamAll sent %d requests, want none", n-before)
	}
}

// TestStreamAllBadBlob: a blob the registry corrupts does not hash to its
// digest: StreamAll blames the registry (unavailable), not the image.
func TestStreamAllBadBlob(t *testing.T) {
	tl := threeChunks(t)
	tl.blob.corrupt = 1000
	l := tl.open(t)
	if _, err := l.StreamAll(t.Context()); !errdefs.IsUnavailable(err) {
		t.Fatalf("StreamAll of a corrupted blob: %v, want ErrUnavailable", err)
	}
}

// TestCloseCancelsFetch: closing the layer ends a read blocked on the
// registry.
func TestCloseCancelsFetch(t *testing.T) {
	tl := threeChunks(t)
	tl.blob.gate, tl.blob.began = make(chan struct{}), make(chan struct{}, 10)
	defer close(tl.blob.gate)
	l := tl.open(t)
	var wg sync.WaitGroup
	wg.Add(1)
	var err error
	go func() {
		defer wg.Done()
		_, err = l.StreamAll(context.Background())
	}()
	<-tl.blob.began
	l.Close()
	wg.Wait()
	if err == nil {
		t.Fatal("StreamAll went on after Close")
	}
}

// TestReadPastEndSaysEOF: a read that runs past the end of a file returns
// the bytes up to the end and io.EOF, as io.ReaderAt asks. A nil error there
// made package elfdeps read a library's last block again for each of its
// dynamic entries (30 reads of 64 KiB for one parse).
func TestReadPastEndSaysEOF(t *testing.T) {
	tl := threeChunks(t)
	l := tl.open(t)
	id := tl.id(t, l, "small")
	for _, c := range []struct {
		off, size int64
		wantN     int
		wantErr   error
	}{
		{0, 1000, 1000, nil},
		{0, 4096, 1000, io.EOF},
		{990, 64, 10, io.EOF},
		{1000, 1, 0, io.EOF},
	} {
		p := make([]byte, c.size)
		n, err := l.ReadAt(t.Context(), id, p, c.off)
		if n != c.wantN || err != c.wantErr {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v; want %d, %v", c.size, c.off, n, err, c.wantN, c.wantErr)
		}
	}
}
