package layer

import (
	"fmt"
	"testing"
	"time"
)

// smallFiles is a layer of n files of 500 bytes, stored in name order.
func smallFiles(t *testing.T, n int) *testLayer {
	files := make([]testFile, n)
	for i := range files {
		files[i] = testFile{fmt.Sprintf("f%02d", i), randomData(500, uint64(i))}
	}
	return buildTestLayer(t, testChunk, files...)
}

// readAheadReach reads f00 through a fresh layer with a large read-ahead
// budget and the model set up by setModel, waits for the read-ahead
// stream, and returns how many of the following files came with it.
func readAheadReach(t *testing.T, setModel func(*raModel)) int {
	tl := smallFiles(t, 30)
	l := tl.open(t, WithReadAhead(1<<20))
	setModel(&l.ra)
	if err := tl.readAll(t, l, "f00"); err != nil {
		t.Fatal(err)
	}
	l.streams.wg.Wait()
	if n := tl.blob.fetchCount(); n != 1 {
		t.Fatalf("reading f00 sent %d requests, want 1", n)
	}
	for i := 1; i < len(tl.files); i++ {
		if err := tl.readAll(t, l, tl.files[i].name); err != nil {
			t.Fatal(err)
		}
		if tl.blob.fetchCount() > 1 {
			return i - 1
		}
	}
	return len(tl.files) - 1
}

// TestReadAheadCutToOneRoundTrip: the tail reaches as many files as the
// stream stores in one measured round trip (10 ms / 2 ms: 5 files), not
// the whole budget; before anything is measured it reaches raInitialFiles.
func TestReadAheadCutToOneRoundTrip(t *testing.T) {
	measured := readAheadReach(t, func(m *raModel) {
		m.observeRoundTrip(10 * time.Millisecond)
		m.observeTail(20*time.Millisecond, 10)
	})
	if measured != 5 {
		t.Errorf("with a 10 ms round trip and 2 ms per file, read-ahead brought %d files, want 5", measured)
	}
	if cold := readAheadReach(t, func(*raModel) {}); cold != raInitialFiles {
		t.Errorf("before any measurement, read-ahead brought %d files, want %d", cold, raInitialFiles)
	}
}

// TestReadAheadModelLearns: a stream's own round trip and its tail's time
// per file both feed the model, and the cut follows them.
func TestReadAheadModelLearns(t *testing.T) {
	var m raModel
	m.observeRoundTrip(20 * time.Millisecond)
	m.observeTail(10*time.Millisecond, 20) // 0.5 ms a file
	if got := m.maxFiles(); got != 40 {
		t.Errorf("20 ms round trip, 0.5 ms a file: %d files, want 40", got)
	}
	for range 20 { // a fast link: round trips fall to 2 ms
		m.observeRoundTrip(2 * time.Millisecond)
	}
	if got := m.maxFiles(); got < 4 || got > 5 {
		t.Errorf("2 ms round trips, 0.5 ms a file: %d files, want about 4", got)
	}
	m.observeTail(0, 0) // nothing stored: no sample
	for range 20 {
		m.observeTail(time.Hour, 1) // a disk so slow one file outlasts a round trip
	}
	if got := m.maxFiles(); got != 1 {
		t.Errorf("files slower than a round trip: %d files, want 1", got)
	}
}

// TestReadAheadMeasuresStreams: a read-ahead stream measures its round
// trip and its tail.
func TestReadAheadMeasuresStreams(t *testing.T) {
	tl := smallFiles(t, 30)
	l := tl.open(t, WithReadAhead(1<<20))
	if err := tl.readAll(t, l, "f00"); err != nil {
		t.Fatal(err)
	}
	l.streams.wg.Wait()
	l.ra.mu.Lock()
	defer l.ra.mu.Unlock()
	if l.ra.rtt <= 0 || l.ra.perFile <= 0 {
		t.Errorf("after one read-ahead stream: round trip %v, per file %v; want both measured", l.ra.rtt, l.ra.perFile)
	}
}
