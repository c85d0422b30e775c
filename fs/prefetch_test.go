package fs_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// statusOf returns the status of the layer mounted at mp.
func statusOf(t testing.TB, f *lfs.FS, mp string) lfs.LayerStatus {
	t.Helper()
	for _, s := range f.Status() {
		if s.Mountpoint == mp {
			return s
		}
	}
	t.Fatalf("nothing mounted at %s", mp)
	return lfs.LayerStatus{}
}

// waitFor polls cond until it holds. The deadline only keeps a broken
// build from hanging: it is no performance bound.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkFile reads name under mp through FUSE and compares it with e.
func checkFile(t testing.TB, mp string, e tentry) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(mp, e.name))
	if err != nil {
		t.Fatal(err)
	}
	if want := expected(t, e, 0, e.size); !bytes.Equal(got, want) {
		t.Fatalf("%s: content differs", e.name)
	}
}

// requestsAfterPrefetch waits until the prefetch of f's layer at mp is
// over, then reads and checks es, and returns how many requests the reads
// sent.
func requestsAfterPrefetch(t testing.TB, f *lfs.FS, mp string, proxy *rangeProxy, es ...tentry) int {
	t.Helper()
	waitFor(t, "the prefetch", func() bool { return statusOf(t, f, mp).PrefetchDone })
	before := len(proxy.Requests())
	for _, e := range es {
		checkFile(t, mp, e)
	}
	return len(proxy.Requests()) - before
}

// landmarkImage is three layers with prioritized files: large ones, small
// ones sharing compressed frames, and files nobody asked for.
func landmarkImage(t testing.TB) (layers []*builtLayer, prio [][]tentry) {
	var small []tentry
	for i := range 20 {
		small = append(small, text(fmt.Sprintf("etc/conf%02d", i), fmt.Sprintf("setting %d\n", i)))
	}
	specs := []struct {
		prio, rest []tentry
		opts       []estargz.Option
	}{
		{prio: []tentry{reg("bin/app", 3<<20, 1), reg("lib/a.so", 200<<10, 2)}, rest: []tentry{reg("data/big", 8<<20, 3)}},
		{prio: small, rest: []tentry{reg("data/other", 4<<20, 4)}, opts: []estargz.Option{estargz.WithMinChunkSize(64 << 10)}},
		{prio: []tentry{reg("usr/share/x", 1<<20, 5), reg("usr/share/y", 300<<10, 6)}, rest: []tentry{reg("usr/share/z", 2<<20, 7)}},
	}
	for _, s := range specs {
		var names []string
		for _, e := range s.prio {
			names = append(names, e.name)
		}
		es := append(append(parentDirs(append(s.rest, s.prio...)), s.rest...), s.prio...)
		opts := append([]estargz.Option{estargz.WithPrioritizedFiles(names)}, s.opts...)
		layers = append(layers, buildLayer(t, es, opts...))
		prio = append(prio, s.prio)
	}
	return layers, prio
}

// parentDirs returns directory entries for the parents of es, parents
// first.
func parentDirs(es []tentry) []tentry {
	seen := map[string]bool{}
	var out []tentry
	for _, e := range es {
		var parents []string
		for d := filepath.Dir(e.name); d != "." && !seen[d]; d = filepath.Dir(d) {
			seen[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			out = append(out, dir(d+"/", 0o755))
		}
	}
	return out
}

// TestPrefetchFewRequests mounts three layers with landmarks: each layer's
// prioritized region comes in one request, and reading every prioritized
// file afterwards sends none.
func TestPrefetchFewRequests(t *testing.T) {
	testenv.RequireFUSE(t)
	reg := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, reg.Host, 0)
	layers, prio := landmarkImage(t)
	push(t, reg.Host, "prefetch/app:v1", layers...)
	ref := proxy.Host + "/prefetch/app:v1"

	f := newFS(t, lfs.WithPrefetch(true), lfs.WithPrefetchWait(time.Minute))
	var mps []string
	var blobBytes int64
	for _, l := range layers {
		mp := mount(t, f, ref, l)
		if s := statusOf(t, f, mp); !s.PrefetchDone {
			t.Fatalf("Mount of %s returned before its prefetch, within its wait", l.digest)
		}
		mps = append(mps, mp)
		blobBytes += l.size
	}
	const tocRequests = 2 // footer, then TOC
	reqs := proxy.Requests()
	prefetchRequests := len(reqs) - tocRequests*len(layers)
	if prefetchRequests < 1 || prefetchRequests > len(layers) {
		t.Errorf("prefetching %d layers took %d requests, want 1 to %d (ranges %v)",
			len(layers), prefetchRequests, len(layers), reqs)
	}
	var fetched int64
	for _, mp := range mps {
		fetched += statusOf(t, f, mp).BytesFetched
	}
	// The unprioritized files (14 MiB of random data) must not come along.
	if limit := blobBytes - 14<<20; fetched > limit {
		t.Errorf("prefetch fetched %d bytes of %d: more than the prioritized regions", fetched, blobBytes)
	}

	before := len(proxy.Requests())
	for i, mp := range mps {
		for _, e := range prio[i] {
			checkFile(t, mp, e)
		}
	}
	if n := len(proxy.Requests()) - before; n != 0 {
		t.Errorf("reading the prioritized files after the prefetch sent %d requests, want 0", n)
	}
	t.Logf("%d layers: %d prefetch requests, %d bytes fetched of %d", len(layers), prefetchRequests, fetched, blobBytes)
}

// TestReadNotQueuedBehindPrefetch holds a layer's prefetch request at the
// proxy and reads a prioritized file meanwhile: the read is served by its
// own request instead of waiting for the prefetch.
func TestReadNotQueuedBehindPrefetch(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	a, b := reg("a", 12<<20, 11), reg("b", 12<<20, 12)
	l := buildLayer(t, []tentry{a, b}, estargz.WithPrioritizedFiles([]string{"a", "b"}), estargz.WithChunkSize(1<<20))
	push(t, registry.Host, "queue/app:v1", l)
	// Only the prefetch asks for more than a read's 4 MiB at once.
	proxy.Hold(func(r blobRange) bool { return r.len() > 8<<20 })

	f := newFS(t, lfs.WithPrefetch(true))
	mp := mount(t, f, proxy.Host+"/queue/app:v1", l)
	<-proxy.Held()

	done := make(chan error, 1)
	got := make([]byte, 4096)
	const off = 10 << 20
	go func() {
		fh, err := os.Open(filepath.Join(mp, "b"))
		if err == nil {
			_, err = fh.ReadAt(got, off)
			fh.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a liveness guard, not a speed bound
		proxy.Release()
		t.Fatal("a read of a prioritized file waited for the held prefetch")
	}
	if st := statusOf(t, f, mp); st.PrefetchDone {
		t.Fatal("the prefetch finished although its request was held")
	}
	if want := expected(t, b, off, int64(len(got))); !bytes.Equal(got, want) {
		t.Fatal("read returned wrong bytes")
	}
	proxy.Release()
	waitFor(t, "the prefetch", func() bool { return statusOf(t, f, mp).PrefetchDone })
	checkFile(t, mp, a)
	checkFile(t, mp, b)
}

// TestPrefetchWaitBounded: a Mount whose prefetch cannot finish returns
// anyway once its wait is over, and the layer still reads.
func TestPrefetchWaitBounded(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	a := reg("a", 12<<20, 21)
	l := buildLayer(t, []tentry{a}, estargz.WithPrioritizedFiles([]string{"a"}), estargz.WithChunkSize(1<<20))
	push(t, registry.Host, "wait/app:v1", l)
	proxy.Hold(func(r blobRange) bool { return r.len() > 8<<20 })
	f := newFS(t, lfs.WithPrefetch(true), lfs.WithPrefetchWait(50*time.Millisecond))
	mp := mount(t, f, proxy.Host+"/wait/app:v1", l)
	if statusOf(t, f, mp).PrefetchDone {
		t.Fatal("prefetch done although held")
	}
	if st := statusOf(t, f, mp).State; st != lfs.StatePrefetching {
		t.Errorf("state %q, want %q", st, lfs.StatePrefetching)
	}
	checkFile(t, mp, a)
}

// BenchmarkStartPrefetchWait models a container start over a throttled
// link: mount the three layers of landmarkImage one after the other (as
// containerd prepares them), then read every prioritized file. It compares
// Mount returning at once with Mount waiting for its layer's prefetch.
func BenchmarkStartPrefetchWait(b *testing.B) {
	testenv.RequireFUSE(b)
	registry := testenv.StartRegistry(b)
	layers, prio := landmarkImage(b)
	push(b, registry.Host, "start/app:v1", layers...)
	for _, wait := range []time.Duration{0, time.Minute} {
		b.Run(fmt.Sprintf("wait=%v", wait), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				link := startRangeProxy(b, registry.Host, 8<<20)
				f, err := lfs.New(lfs.WithCacheDir(b.TempDir()), lfs.WithResolver(testResolver()),
					lfs.WithPrefetch(true), lfs.WithPrefetchWait(wait))
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				for i, l := range layers {
					mp := mount(b, f, link.Host+"/start/app:v1", l)
					for _, e := range prio[i] {
						if _, err := os.ReadFile(filepath.Join(mp, e.name)); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StopTimer()
				f.Close()
				b.StartTimer()
			}
		})
	}
}
