package layer

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// TestRawTailServesNextReads: with a spool, a read's request goes on
// through the files stored after it as raw bytes, and the reads of those
// files take them from the spool, verified, without another request.
func TestRawTailServesNextReads(t *testing.T) {
	tl := smallFiles(t, 30)
	l := tl.openSpooled(t, WithReadAhead(1<<20))
	readFirstThenRest(t, tl, l)
	if n := tl.blob.fetchCount(); n != 1 {
		t.Errorf("reading 30 neighbouring files sent %d requests, want 1", n)
	}
	if got := l.Stats().ReadSpooledChunks; got != 29 {
		t.Errorf("%d chunks read from the spool, want 29", got)
	}
	tl.streamAndCheck(t, l)
}

// readFirstThenRest reads the layer's first file, waits for its read-ahead
// tail to end, then reads (and checks) every other file in blob order.
func readFirstThenRest(t *testing.T, tl *testLayer, l *Layer) {
	t.Helper()
	if err := tl.readAll(t, l, tl.files[0].name); err != nil {
		t.Fatal(err)
	}
	l.streams.wg.Wait()
	for _, f := range tl.files[1:] {
		if err := tl.readAll(t, l, f.name); err != nil {
			t.Fatal(err)
		}
	}
}

// tailGateBlob serves each response's first head bytes at once and the
// rest only once release is closed: a read-ahead tail still on the wire.
type tailGateBlob struct {
	*faultBlob
	head    int64
	release chan struct{}
}

func (b *tailGateBlob) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	rc, err := b.faultBlob.Fetch(ctx, off, n)
	if err != nil {
		return nil, err
	}
	head := io.LimitReader(rc, min(b.head, n))
	gate := readerFunc(func(p []byte) (int, error) {
		select {
		case <-b.release:
			return rc.Read(p)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	})
	return io.NopCloser(io.MultiReader(head, gate)), nil
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestRawTailReadWaitsForTail: a read of a file whose bytes a tail is still
// receiving waits for them rather than sending its own request.
func TestRawTailReadWaitsForTail(t *testing.T) {
	tl := smallFiles(t, 30)
	gate := &tailGateBlob{faultBlob: tl.blob, release: make(chan struct{})}
	tl.toc.blob = gate
	l := tl.openSpooled(t, WithReadAhead(1<<20))
	gate.head = l.idx.Chunks(tl.id(t, l, "f00"))[0].BlobEnd - l.idx.Chunks(tl.id(t, l, "f00"))[0].BlobOffset
	if err := tl.readAll(t, l, "f00"); err != nil { // returns with the tail held
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() { read <- tl.readAll(t, l, "f20") }()
	for l.spool.waiting.Load() == 0 {
		select {
		case err := <-read:
			t.Fatalf("the read of f20 ended (%v) before the tail came, with %d requests", err, tl.blob.fetchCount())
		case <-time.After(time.Millisecond):
		}
	}
	close(gate.release)
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	l.streams.wg.Wait()
	if n := tl.blob.fetchCount(); n != 1 {
		t.Errorf("%d requests, want the one whose tail brought f20", n)
	}
}

// TestRawTailCorruptIsFetchedAgain: a tail whose bytes are wrong (they are
// checked only when read) costs the read of the file they spoil a request
// of its own, never a wrong byte; the good bytes replace the bad ones in
// the spool, so the diff_id stream still verifies.
func TestRawTailCorruptIsFetchedAgain(t *testing.T) {
	tl := smallFiles(t, 30)
	l := tl.openSpooled(t, WithReadAhead(1<<20))
	tl.blob.corrupt = 1 // flips a byte of the tail: in f15's compressed bytes
	f15 := l.idx.Chunks(tl.id(t, l, "f15"))[0]
	tl.blob.flipAt = (f15.BlobOffset + f15.BlobEnd) / 2
	readFirstThenRest(t, tl, l)
	if n := tl.blob.fetchCount(); n != 2 {
		t.Errorf("%d requests, want the tail's and one for the file it spoiled", n)
	}
	if n := l.Stats().VerifyFailures; n != 0 {
		t.Errorf("%d verify failures counted for fetches that never failed", n)
	}
	tl.streamAndCheck(t, l)
}

// TestStreamAgainWithoutSpool: a tail spoiled where no read checks it (the
// stream is the first to) makes the stream fail its blob digest once; it
// then streams everything from the registry, and verifies.
func TestStreamAgainWithoutSpool(t *testing.T) {
	tl := smallFiles(t, 30)
	l := tl.openSpooled(t, WithReadAhead(1<<20))
	tl.blob.corrupt = 1 // flips a byte in the middle of the tail, read by no one
	if err := tl.readAll(t, l, "f00"); err != nil {
		t.Fatal(err)
	}
	l.streams.wg.Wait()
	if _, n := tl.streamAndCheck(t, l); n < tl.blob.Size() {
		t.Errorf("the stream fetched %d bytes of %d: not everything again after its spooled bytes failed", n, tl.blob.Size())
	}
}

// TestRawTailWithoutSpoolIsDecoded: a layer without a spool reads ahead
// the decoded way, as before.
func TestRawTailWithoutSpoolIsDecoded(t *testing.T) {
	tl := smallFiles(t, 30)
	l := tl.open(t, WithReadAhead(1<<20))
	if err := tl.readAll(t, l, "f00"); err != nil {
		t.Fatal(err)
	}
	l.streams.wg.Wait()
	if err := tl.readAll(t, l, "f01"); err != nil {
		t.Fatal(err)
	}
	if n := tl.blob.fetchCount(); n != 1 || l.Stats().ReadSpooledChunks != 0 {
		t.Errorf("%d requests, %d chunks from a spool; want 1 and none", n, l.Stats().ReadSpooledChunks)
	}
}

// TestNoTailWhileListPrefetches: while a learned list is being prefetched,
// a read fetches its own chunks only; once the prefetch is over, reads
// read ahead again. PrefetchFiles marks itself running while it fetches.
func TestNoTailWhileListPrefetches(t *testing.T) {
	tl := smallFiles(t, 30)
	l := tl.openSpooled(t, WithReadAhead(1<<20))
	own := func(name string) int64 {
		c := l.idx.Chunks(tl.id(t, l, name))[0]
		return c.BlobEnd - c.BlobOffset
	}
	lastFetch := func() int64 {
		fs, _ := tl.blob.served()
		return fs[len(fs)-1][1]
	}

	done := l.prefetchingList()
	if err := tl.readAll(t, l, "f00"); err != nil {
		t.Fatal(err)
	}
	if got, want := lastFetch(), own("f00"); got > want {
		t.Errorf("a read during a list's prefetch asked for %d bytes, want only its own %d", got, want)
	}
	done()
	if err := tl.readAll(t, l, "f10"); err != nil {
		t.Fatal(err)
	}
	l.streams.wg.Wait()
	if got, want := lastFetch(), own("f10"); got <= want {
		t.Errorf("a read after the prefetch asked for %d bytes, want a tail past its own %d", got, want)
	}

	tl.blob.mu.Lock()
	tl.blob.gate, tl.blob.began = make(chan struct{}), make(chan struct{}, 1)
	gate := tl.blob.gate
	tl.blob.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- l.PrefetchFiles(context.Background(), []string{"/f20"}, nil) }()
	<-tl.blob.began
	if n := l.listed.Load(); n != 1 {
		t.Errorf("%d list prefetches marked running while PrefetchFiles fetches, want 1", n)
	}
	close(gate)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := l.listed.Load(); n != 0 {
		t.Errorf("%d list prefetches marked running after PrefetchFiles returned, want 0", n)
	}

	// The ranges an image's label names count as a learned list too, and
	// the prefetch is done only once they are in.
	l.stats.prefetchDoneAt.Store(0)
	tl.blob.mu.Lock()
	tl.blob.gate, tl.blob.began = make(chan struct{}), make(chan struct{}, 1)
	gate = tl.blob.gate
	tl.blob.mu.Unlock()
	go func() {
		errc <- l.PrefetchRegionAndFiles(context.Background(), []string{"/f25"}, map[string][]prefetchlist.Range{"/f25": {{Start: 0, End: 1}}})
	}()
	<-tl.blob.began
	if n := l.listed.Load(); n != 1 {
		t.Errorf("%d list prefetches marked running while PrefetchRegionAndFiles fetches, want 1", n)
	}
	if l.Stats().PrefetchDone {
		t.Error("the prefetch reported done while the label's ranges are being fetched")
	}
	close(gate)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := l.listed.Load(); n != 0 || !l.Stats().PrefetchDone {
		t.Errorf("after PrefetchRegionAndFiles: %d list prefetches marked running (want 0), done %v (want true)", n, l.Stats().PrefetchDone)
	}
}

// TestRawTailGrowsWithReads: a layer's first raw tail reaches
// rawTailStart, not the whole budget; a read that takes from the spool
// doubles the next one, and a tail no read took from halves the one after
// it. With the fixed budget it replaces, every tail reached 1 MiB.
func TestRawTailGrowsWithReads(t *testing.T) {
	files := make([]testFile, 80)
	for i := range files {
		files[i] = testFile{fmt.Sprintf("f%02d", i), randomData(32<<10, uint64(i))} // incompressible
	}
	tl := buildTestLayer(t, testChunk, files...)
	l := tl.openSpooled(t, WithReadAhead(1<<20))
	tailOf := func(name string) int64 {
		t.Helper()
		before, _ := tl.blob.served()
		if err := tl.readAll(t, l, name); err != nil {
			t.Fatal(err)
		}
		l.streams.wg.Wait()
		after, _ := tl.blob.served()
		if len(after) != len(before)+1 {
			t.Fatalf("reading %s sent %d requests, want 1", name, len(after)-len(before))
		}
		c := l.idx.Chunks(tl.id(t, l, name))[0]
		return after[len(after)-1][1] - (c.BlobEnd - c.BlobOffset)
	}
	near := func(step string, got, want int64) {
		t.Helper()
		if got < want-(40<<10) || got > want {
			t.Errorf("%s: the tail was %d bytes, want about %d", step, got, want)
		}
	}
	near("first tail", tailOf("f00"), rawTailStart)
	if err := tl.readAll(t, l, "f01"); err != nil { // from the spool
		t.Fatal(err)
	}
	near("after a read took from the spool", tailOf("f20"), 2*rawTailStart)
	near("after a tail no read took from", tailOf("f40"), rawTailStart)
	if got := l.Stats().ReadSpooledChunks; got != 1 {
		t.Errorf("%d chunks read from the spool, want 1 (f01)", got)
	}
}
