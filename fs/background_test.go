package fs_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestBackgroundFetchCompletes mounts a layer without a landmark and lets
// the background fetch run: the layer becomes complete, every chunk is in
// the cache (reading everything sends no request) and no background
// request is larger than the bound.
func TestBackgroundFetchCompletes(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	es := []tentry{dir("d/", 0o755), reg("d/one", 5<<20, 41), reg("d/two", 3<<20, 42), text("d/small", "hello\n"),
		reg("empty", 0, 0)}
	for i := range 30 {
		es = append(es, reg("d/f"+strings.Repeat("x", i), int64(1000*i), uint64(100+i)))
	}
	l := buildLayer(t, es, estargz.WithChunkSize(512<<10))
	push(t, registry.Host, "bg/app:v1", l)

	f := newFS(t, lfs.WithPrefetch(true), lfs.WithBackgroundFetch(true))
	mp := mount(t, f, proxy.Host+"/bg/app:v1", l)
	// The layer is complete once every chunk is present, a moment before
	// the background fetch records its end: wait for both.
	waitFor(t, "the background fetch", func() bool {
		st := statusOf(t, f, mp)
		return st.State == lfs.StateComplete && !st.BackgroundDoneAt.IsZero()
	})
	st := statusOf(t, f, mp)
	if st.FetchedPercent != 100 || st.ChunksPresent != st.ChunksTotal || st.BackgroundDoneAt.IsZero() {
		t.Fatalf("complete layer reports %.1f%%, %d of %d chunks, done at %v",
			st.FetchedPercent, st.ChunksPresent, st.ChunksTotal, st.BackgroundDoneAt)
	}
	for _, r := range proxy.Requests()[2:] { // after footer and TOC
		if r.len() > 2<<20 {
			t.Errorf("background request of %d bytes, more than 2 MiB", r.len())
		}
	}
	before := len(proxy.Requests())
	for _, e := range es {
		if e.typ == '0' {
			checkFile(t, mp, e)
		}
	}
	if n := len(proxy.Requests()) - before; n != 0 {
		t.Errorf("reading a complete layer sent %d requests", n)
	}

	if v := gaugeValue(t, f.Collector(), "lazysnap_fs_layer_complete"); v != 1 {
		t.Errorf("lazysnap_fs_layer_complete = %v, want 1", v)
	}
}

// gaugeValue gathers c and returns the value of the only series of name.
func gaugeValue(t testing.TB, c prometheus.Collector, name string) float64 {
	t.Helper()
	return metricValue(t, c, name).GetGauge().GetValue()
}

// counterValue gathers c and returns the value of the only series of name.
func counterValue(t testing.TB, c prometheus.Collector, name string) float64 {
	t.Helper()
	return metricValue(t, c, name).GetCounter().GetValue()
}

// metricValue gathers c and returns the only series of name.
func metricValue(t testing.TB, c prometheus.Collector, name string) *dto.Metric {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0]
		}
	}
	t.Fatalf("no single series %s", name)
	return nil
}

// TestBackgroundFetchOff: without the background fetch nothing but the
// prefetch is fetched.
func TestBackgroundFetchOff(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	l := buildLayer(t, []tentry{reg("a", 2<<20, 51)})
	push(t, registry.Host, "bgoff/app:v1", l)
	f := newFS(t, lfs.WithPrefetch(true))
	mp := mount(t, f, proxy.Host+"/bgoff/app:v1", l)
	waitFor(t, "the prefetch", func() bool { return statusOf(t, f, mp).PrefetchDone })
	if st := statusOf(t, f, mp); st.State != lfs.StateLazy || st.BytesPresent != 0 {
		t.Errorf("state %q with %d bytes present, want %q and none", st.State, st.BytesPresent, lfs.StateLazy)
	}
	if _, err := os.Stat(filepath.Join(mp, "a")); err != nil {
		t.Fatal(err)
	}
}

// busyNode is a layer.NodeLoad that the test switches between busy and
// idle.
type busyNode struct{ idle atomic.Bool }

func (n *busyNode) FreeCores() float64 {
	if n.idle.Load() {
		return 8
	}
	return 0
}

// TestBackgroundFetchYieldsToBusyNode: while the node's other processes
// leave too few cores free, the background fetch sends no request (a read
// still does); once they leave enough, the layer completes, and the wait
// shows in lazysnap_fs_background_yield_seconds_total.
func TestBackgroundFetchYieldsToBusyNode(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	es := []tentry{reg("a", 3<<20, 61), reg("b", 3<<20, 62), text("small", "hello\n")}
	l := buildLayer(t, es, estargz.WithChunkSize(512<<10))
	push(t, registry.Host, "bgyield/app:v1", l)

	node := &busyNode{}
	f := newFS(t, lfs.WithBackgroundFetch(true), lfs.WithBackgroundQuietPeriod(0),
		lfs.WithBackgroundYield(node, 1, time.Hour))
	mp := mount(t, f, proxy.Host+"/bgyield/app:v1", l)
	checkFile(t, mp, es[2]) // a read is not held back
	time.Sleep(time.Second)
	if st := statusOf(t, f, mp); st.BackgroundRequests != 0 || st.State == lfs.StateComplete {
		t.Fatalf("busy node: %d background requests, state %q; want none, not complete", st.BackgroundRequests, st.State)
	}
	node.idle.Store(true)
	waitFor(t, "the background fetch", func() bool { return statusOf(t, f, mp).State == lfs.StateComplete })
	if v := counterValue(t, f.Collector(), "lazysnap_fs_background_yield_seconds_total"); v < 0.9 {
		t.Errorf("lazysnap_fs_background_yield_seconds_total = %v, want at least the 1 s the node was busy", v)
	}
}
