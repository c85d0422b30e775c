package fs_test

import (
	"testing"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestTracePrefetchOnNextStart: an image converted without a prefetch list
// runs once on a node, which records the files it opens first. The next
// cold start of the image on that node (an empty cache) prefetches those
// files at mount in few requests, so its first reads of them send none.
func TestTracePrefetchOnNextStart(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	var es []tentry
	for i := range 40 {
		es = append(es, reg("lib/mod"+string(rune('a'+i%26))+string(rune('a'+i/26)), 20<<10, uint64(300+i)))
	}
	l := buildLayer(t, es)
	push(t, registry.Host, "trace/app:v1", l)
	ref := proxy.Host + "/trace/app:v1"
	traces := t.TempDir()
	startup := []tentry{es[3], es[17], es[29], es[35]}

	first := newFS(t, lfs.WithTraceDir(traces), lfs.WithPrefetch(true))
	mp := mount(t, first, ref, l)
	for _, e := range startup {
		checkFile(t, mp, e)
	}
	if err := first.Close(); err != nil { // unmounting saves the trace
		t.Fatal(err)
	}

	next := newFS(t, lfs.WithTraceDir(traces), lfs.WithPrefetch(true))
	mp = mount(t, next, ref, l)
	waitFor(t, "the prefetch", func() bool { return statusOf(t, next, mp).PrefetchDone })
	prefetched := len(proxy.Requests())
	for _, e := range startup {
		checkFile(t, mp, e)
	}
	if n := len(proxy.Requests()) - prefetched; n != 0 {
		t.Errorf("reading the %d files of the trace after the prefetch sent %d requests, want 0", len(startup), n)
	}
	checkFile(t, mp, es[0]) // not in the trace: fetched when read
	if n := len(proxy.Requests()) - prefetched; n != 1 {
		t.Errorf("reading a file outside the trace sent %d requests, want 1", n)
	}

	off := newFS(t, lfs.WithTraceDir(traces), lfs.WithPrefetch(true), lfs.WithTracePrefetch(false))
	before := len(proxy.Requests())
	mp = mount(t, off, ref, l)
	checkFile(t, mp, startup[0])
	if n := len(proxy.Requests()) - before; n < 3 { // footer, TOC, the file
		t.Errorf("with trace prefetch off, reading a traced file sent %d requests; want it fetched when read", n)
	}
}
