package fs_test

import (
	"bytes"

	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

const (
	prioFileSize  = 64 << 20
	prioChunkSize = 512 << 10
	prioLinkRate  = 8 << 20 // bytes per second of the shared, throttled link
	// Reads go past this offset; the background fetch, in blob order from
	// the start, is far from it while the test reads.
	prioFarOffset = 48 << 20
	// The first proxy events are the footer's and the TOC's requests, begun
	// and ended before Mount returns.
	tocEvents = 4
)

// prioritySetup pushes one layer of a 64 MiB file and returns a proxy
// throttling the link to it, and another with a link of its own.
func prioritySetup(t testing.TB) (*rangeProxy, *rangeProxy, *builtLayer, tentry) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	big := reg("big", prioFileSize, 61)
	l := buildLayer(t, []tentry{big}, estargz.WithChunkSize(prioChunkSize))
	push(t, registry.Host, "prio/app:v1", l)
	return startRangeProxy(t, registry.Host, prioLinkRate), startRangeProxy(t, registry.Host, prioLinkRate), l, big
}

// TestReadFirstDuringBackground reads an uncached chunk while the
// background fetch of a large layer runs over a throttled link. The read is
// served first: while it waits no background request starts, at most one
// (bounded) background request is in flight beside it, and at most one
// started between the read's call and its request (the one that may have
// been admitted just before the read registered). To give a background
// request the chance to start, the proxy holds the read's request until
// every background request in flight has finished, and a while longer.
func TestReadFirstDuringBackground(t *testing.T) {
	proxy, _, l, big := prioritySetup(t)
	f := newFS(t, lfs.WithBackgroundFetch(true))
	mp := mount(t, f, proxy.Host+"/prio/app:v1", l)
	waitFor(t, "background requests", func() bool { return len(proxy.Requests()) >= 4 })
	proxy.Hold(func(r blobRange) bool { return r.start >= prioFarOffset })

	mark := len(proxy.Events())
	// In the file's last chunk: a read's request is then its chunk alone,
	// with no window of the file's next chunks streaming on after it.
	const off = prioFileSize - prioChunkSize + 100
	got := make(chan []byte, 1)
	go func() {
		b, err := readAtErr(filepath.Join(mp, "big"), off, 4096)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	<-proxy.Held()
	waitFor(t, "background requests to finish", func() bool { return backgroundInFlight(proxy.Events()) == 0 })
	time.Sleep(200 * time.Millisecond) // room for a wrongly admitted request to show; no bound on anything
	proxy.Release()
	if want := expected(t, big, off, 4096); !bytes.Equal(<-got, want) {
		t.Fatal("read returned wrong bytes")
	}
	events := proxy.Events()

	inFlight := map[int]bool{} // background requests begun and not ended
	fgBegin, fgEnd := -1, -1
	bgBefore, bgDuring := 0, 0
	for i, e := range events {
		fg := e.r.start >= prioFarOffset && i >= tocEvents
		switch {
		case fg && e.begin && fgBegin < 0:
			fgBegin = i
			if len(inFlight) > 1 {
				t.Errorf("%d background requests in flight when the read's request started, want at most 1", len(inFlight))
			}
		case fg && !e.begin:
			fgEnd = i
		case !fg && e.begin && e.r.len() > 2<<20 && i >= tocEvents:
			t.Errorf("background request of %d bytes, more than 2 MiB", e.r.len())
		}
		if fg || i < tocEvents {
			continue
		}
		if e.begin {
			inFlight[e.id] = true
		} else {
			delete(inFlight, e.id)
		}
		if e.begin && i >= mark && fgBegin < 0 {
			bgBefore++
		}
		if e.begin && fgBegin >= 0 && fgEnd < 0 {
			bgDuring++
		}
	}
	if fgBegin < 0 || fgEnd < 0 {
		t.Fatalf("no complete request for the read among %d events", len(events))
	}
	if bgBefore > 1 {
		t.Errorf("%d background requests started between the read and its request, want at most 1", bgBefore)
	}
	if bgDuring != 0 {
		t.Errorf("%d background requests started while the read's request ran, want 0", bgDuring)
	}
	if st := statusOf(t, f, mp); st.BackgroundDone {
		t.Fatal("the background fetch was over before the read: the test proves nothing")
	}
}

// backgroundInFlight counts the requests for the start of the blob (the
// background fetch's) begun and not ended.
func backgroundInFlight(events []proxyEvent) int {
	n := 0
	for i, e := range events {
		switch {
		case i < tocEvents || e.r.start >= prioFarOffset:
		case e.begin:
			n++
		default:
			n--
		}
	}
	return n
}

// readAt reads n bytes at off of path through a fresh open.
func readAt(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	b, err := readAtErr(path, off, n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readAtErr(path string, off int64, n int) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	buf := make([]byte, n)
	_, err = fh.ReadAt(buf, off)
	return buf, err
}

// BenchmarkReadDuringBackground measures the latency of reading an uncached
// chunk over a throttled link, idle and while the background fetch of the
// same large layer runs, and reports busy/idle (the target is at
// most 3). Run with -benchtime=10x: each iteration reads a chunk of its
// own, from the end of the file backwards.
func BenchmarkReadDuringBackground(b *testing.B) {
	idleLink, busyLink, l, _ := prioritySetup(b)
	idle := filepath.Join(mount(b, newFS(b), idleLink.Host+"/prio/app:v1", l), "big")
	busyFS := newFS(b, lfs.WithBackgroundFetch(true))
	busy := filepath.Join(mount(b, busyFS, busyLink.Host+"/prio/app:v1", l), "big")
	waitFor(b, "background requests", func() bool { return len(busyLink.Requests()) >= 4 })
	var idleTotal, busyTotal time.Duration
	i := 0
	for b.Loop() {
		off := int64(prioFileSize - (2*i+1)*prioChunkSize)
		if off < prioFarOffset {
			b.Fatal("too many iterations for the file; use -benchtime=10x")
		}
		idleTotal += timeRead(b, idle, off)
		busyTotal += timeRead(b, busy, off)
		i++
	}
	if st := busyFS.Status(); len(st) != 1 || st[0].BackgroundDone {
		b.Fatal("the background fetch was over during the measurement")
	}
	b.ReportMetric(idleTotal.Seconds()*1000/float64(i), "idle-ms/read")
	b.ReportMetric(busyTotal.Seconds()*1000/float64(i), "busy-ms/read")
	b.ReportMetric(float64(busyTotal)/float64(idleTotal), "busy/idle")
}

func timeRead(b *testing.B, path string, off int64) time.Duration {
	start := time.Now()
	readAt(b, path, off, 4096)
	return time.Since(start)
}
