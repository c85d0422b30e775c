package layer

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// spoolLayer is twelve files of 16 KiB (a read of the first brings the
// next ones with it, by read-ahead), a file of four chunks, one of three,
// and twelve more small files: every byte random, so that the compressed
// pieces reads fetch are as large as their files.
func spoolLayer(t *testing.T) *testLayer {
	var files []testFile
	for i := range 12 {
		files = append(files, testFile{fmt.Sprintf("a%02d", i), randomData(16<<10, uint64(10+i))})
	}
	files = append(files, testFile{"big", randomData(4*testChunk, 30)}, testFile{"mid", randomData(3*testChunk, 31)})
	for i := range 12 {
		files = append(files, testFile{fmt.Sprintf("b%02d", i), randomData(16<<10, uint64(40+i))})
	}
	return buildTestLayer(t, testChunk, files...)
}

// openSpooled opens tl with a spool in a fresh directory and a scheduler
// that lets background requests start at once.
func (tl *testLayer) openSpooled(t *testing.T, opts ...Option) *Layer {
	t.Helper()
	sched := NewScheduler(WithQuietPeriod(time.Millisecond))
	return tl.open(t, append([]Option{WithSpoolDir(t.TempDir()), WithScheduler(sched)}, opts...)...)
}

// union returns the bytes the fetches (off, n) cover together.
func union(fetches ...[][2]int64) int64 {
	var s spans
	for _, fs := range fetches {
		for _, f := range fs {
			s = s.add(f[0], f[0]+f[1])
		}
	}
	return s.size()
}

// streamAndCheck runs StreamAll, checks the diff_id, and returns the
// Fetches the stream sent and the bytes they served.
func (tl *testLayer) streamAndCheck(t *testing.T, l *Layer) ([][2]int64, int64) {
	t.Helper()
	before, _ := tl.blob.served()
	got, err := l.StreamAll(t.Context())
	if err != nil {
		t.Fatalf("StreamAll: %v", err)
	}
	if got != tl.diffID {
		t.Fatalf("StreamAll = %s, want the diff_id %s", got, tl.diffID)
	}
	after, _ := tl.blob.served()
	stream := after[len(before):]
	var n int64
	for _, f := range stream {
		n += f[1]
	}
	return stream, n
}

func spoolClosed(l *Layer) bool {
	if l.spool == nil {
		return true
	}
	l.spool.mu.Lock()
	defer l.spool.mu.Unlock()
	return l.spool.closed
}

// TestStreamTakesFetchedBytesFromSpool: what reads (their read-ahead tails
// included) and the TOC fetched before StreamAll is taken from the spool:
// over reads and stream, the registry serves no byte twice, and the stream
// counts what it reused.
func TestStreamTakesFetchedBytesFromSpool(t *testing.T) {
	tl := spoolLayer(t)
	l := tl.openSpooled(t)
	if ents, err := os.ReadDir(l.opts.spoolDir); err != nil || len(ents) != 0 {
		t.Fatalf("spool dir holds %v (%v): the spool must be unlinked at once", ents, err)
	}
	if err := tl.readAll(t, l, "a00"); err != nil { // with a tail of the next files
		t.Fatal(err)
	}
	if _, err := l.ReadAt(t.Context(), tl.id(t, l, "big"), make([]byte, 10), testChunk+5); err != nil {
		t.Fatal(err)
	}
	if err := tl.readAll(t, l, "mid"); err != nil { // with a tail of b00...
		t.Fatal(err)
	}
	l.streams.wg.Wait() // the read-ahead tails
	reads, readBytes := tl.blob.served()
	if len(reads) == 0 || len(reads) > 3 {
		t.Fatalf("reads sent %v, want 1 to 3 requests", reads)
	}

	stream, streamBytes := tl.streamAndCheck(t, l)
	if n := l.Stats().BackgroundRequests; n != int64(len(stream)) {
		t.Errorf("%d background requests counted for the stream's %d", n, len(stream))
	}
	size := tl.blob.Size()
	if total := readBytes + streamBytes; total > size {
		t.Errorf("reads and stream fetched %d bytes of a %d-byte blob: %d fetched twice", total, size, total-size)
	}
	spooled := l.Stats().StreamSpooledBytes
	if want := union(reads, tl.tocFetches); spooled != want {
		t.Errorf("the stream took %d bytes from the spool, want the %d reads and the TOC fetched", spooled, want)
	}
	if streamBytes+spooled != size {
		t.Errorf("the stream fetched %d and took %d from the spool, want %d together", streamBytes, spooled, size)
	}
	if !spoolClosed(l) {
		t.Error("the spool outlived StreamAll")
	}
}

// TestSpoolDropsBadResponse: a read whose first response is corrupt
// retries and succeeds; the corrupt response's bytes are not spooled (even
// the chunks of it that verified), so StreamAll still gets the blob's
// digest and the diff_id, and takes only the retry's bytes from the spool.
func TestSpoolDropsBadResponse(t *testing.T) {
	tl := spoolLayer(t)
	l := tl.openSpooled(t, WithReadAhead(0))
	tl.blob.corrupt = 1 // flips a byte in the middle of the next response: in big's chunk 1
	if _, err := l.ReadAt(t.Context(), tl.id(t, l, "big"), make([]byte, 2*testChunk+1), 0); err != nil {
		t.Fatal(err)
	}
	reads, _ := tl.blob.served()
	if len(reads) != 2 || l.Stats().VerifyFailures != 1 {
		t.Fatalf("requests %v, %d verify failures; want a request and its retry", reads, l.Stats().VerifyFailures)
	}
	tl.streamAndCheck(t, l)
	if got, want := l.Stats().StreamSpooledBytes, union(reads[1:], tl.tocFetches); got != want {
		t.Errorf("the stream took %d bytes from the spool, want the %d of the retry and the TOC", got, want)
	}
}

// enospcFile is a spool file on a full disk.
type enospcFile struct{ *os.File }

func (enospcFile) WriteAt([]byte, int64) (int, error) { return 0, syscall.ENOSPC }

// TestSpoolUnwritable: a spool that cannot be created, or written, costs
// only bytes: reads work, and StreamAll verifies, fetching what is not
// spooled.
func TestSpoolUnwritable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fullDisk bool // else the spool dir is missing
	}{
		{"no dir", false},
		{"full disk", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := spoolLayer(t)
			var l *Layer
			if tc.fullDisk {
				l = tl.openSpooled(t)
				l.spool.f = enospcFile{l.spool.f.(*os.File)} // after New spooled the TOC
			} else {
				l = tl.openSpooled(t, WithSpoolDir(filepath.Join(t.TempDir(), "missing")))
				if l.spool != nil {
					t.Fatal("a spool in a missing directory")
				}
			}
			for _, f := range tl.files {
				if err := tl.readAll(t, l, f.name); err != nil {
					t.Fatalf("reading %s: %v", f.name, err)
				}
			}
			l.streams.wg.Wait()
			_, streamBytes := tl.streamAndCheck(t, l)
			var want int64 // taken from the spool
			if tc.fullDisk {
				want = union(tl.tocFetches)
			}
			if got := l.Stats().StreamSpooledBytes; got != want {
				t.Errorf("the stream took %d bytes from the spool, want %d", got, want)
			}
			if streamBytes != tl.blob.Size()-want {
				t.Errorf("the stream fetched %d bytes, want %d", streamBytes, tl.blob.Size()-want)
			}
		})
	}
}

// TestSpoolConcurrentReadsDuringStream: reads in many goroutines while the
// stream runs (for the race detector); the diff_id comes out right.
func TestSpoolConcurrentReadsDuringStream(t *testing.T) {
	tl := spoolLayer(t)
	l := tl.openSpooled(t)
	var wg sync.WaitGroup
	errs := make(chan error, len(tl.files))
	for i, f := range tl.files {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * time.Millisecond) // spread over the stream
			errs <- tl.readAll(t, l, f.name)
		})
	}
	_, _ = tl.streamAndCheck(t, l)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	l.streams.wg.Wait()
}

// TestSpoolNext: the stream takes what the spool holds at its position,
// cuts a request where a piece of at least minPiece (or one reaching the
// request's end) starts, and fetches shorter pieces again within it.
func TestSpoolNext(t *testing.T) {
	s := &spool{have: spans{{100, 200}, {300, 310}, {400, 600}, {900, 950}}}
	for _, tc := range []struct {
		off, end, n int64
		spooled     bool
	}{
		{0, 1000, 100, false},   // [100, 200) is minPiece long: cut
		{100, 1000, 100, true},  // held
		{150, 180, 30, true},    // held, to the request's end
		{200, 1000, 200, false}, // [300, 310) is short: fetched again
		{600, 1000, 400, false}, // [900, 950) is short, and ends before 1000
		{600, 950, 300, false},  // it reaches the end: cut
		{600, 920, 300, false},  // it crosses the end: cut
		{960, 1000, 40, false},  // nothing held
	} {
		n, spooled := s.next(tc.off, tc.end, 100)
		if n != tc.n || spooled != tc.spooled {
			t.Errorf("next(%d, %d) = %d, %v; want %d, %v", tc.off, tc.end, n, spooled, tc.n, tc.spooled)
		}
	}
}

// TestSpoolClaims: a fetch spools only what no other fetch holds or claimed;
// a failed fetch keeps nothing; nothing behind the stream is kept.
func TestSpoolClaims(t *testing.T) {
	s, err := openSpool(t.TempDir(), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	data := randomData(1000, 1)
	a := s.claim(0, 500)
	b := s.claim(200, 800) // owns [500, 800)
	b.write(data[200:800], 200)
	a.write(data[:500], 0)
	a.finish(false)
	b.finish(true)
	if !slices.Equal(s.have, spans{{500, 800}}) {
		t.Errorf("spool holds %v, want [500, 800) only", s.have)
	}
	s.put(0, data[:1000]) // fills the gaps around what it holds
	if !slices.Equal(s.have, spans{{0, 1000}}) {
		t.Errorf("spool holds %v, want [0, 1000)", s.have)
	}
	got := make([]byte, 1000)
	if err := s.readAt(got, 0); err != nil || !slices.Equal(got, data) {
		t.Fatalf("spooled bytes differ (%v)", err)
	}
	s.advance(600)
	if !slices.Equal(s.have, spans{{600, 1000}}) {
		t.Errorf("after the stream reached 600 the spool holds %v", s.have)
	}
	if w := s.claim(0, 600); w != nil {
		t.Errorf("a fetch behind the stream claimed %v", w.own)
	}
}

// TestSpoolDroppedWithoutStream: DropSpool and Close release the spool.
func TestSpoolDroppedWithoutStream(t *testing.T) {
	tl := spoolLayer(t)
	l := tl.openSpooled(t)
	l.DropSpool()
	if !spoolClosed(l) {
		t.Fatal("DropSpool left the spool open")
	}
	if err := tl.readAll(t, l, "a00"); err != nil {
		t.Fatal(err)
	}
	l.streams.wg.Wait()
	if _, err := l.spool.f.WriteAt([]byte{1}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("spool file after DropSpool: %v, want closed", err)
	}
}
