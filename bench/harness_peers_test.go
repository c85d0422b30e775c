package bench

import (
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestHarnessStargz runs the stargz modes once on the tiny image beside
// overlayfs: each case's fresh containerd-stargz-grpc mounts the layers
// lazily, the peer's optimizer records what the workloads read, and
// teardown leaves nothing behind. (SOCI is left out: it indexes no layer
// under 10 MiB, so the tiny image has nothing to index.)
func TestHarnessStargz(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containerd and the stargz snapshotter per case")
	}
	testenv.RequireFUSE(t)
	requireBinaries(t)
	cache := t.TempDir()
	modes := []Mode{Overlayfs, Stargz, StargzOptimized}
	s, err := New(WithWorkloads(tinyWorkloads()...), WithReps(1), WithRate(1_000_000_000), WithModes(modes...),
		WithDelay(2*time.Millisecond), WithSettle(500*time.Millisecond, 20*time.Second), WithCacheDir(cache))
	if err != nil {
		t.Fatal(err)
	}
	var rep *Report
	t.Run("run", func(t *testing.T) {
		rep = s.Run(t.Context(), t, testRunner(t))
	})
	if t.Failed() {
		return
	}
	if want := len(tinyWorkloads()) * len(modes); len(rep.Results) != want {
		t.Fatalf("%d results; want %d", len(rep.Results), want)
	}
	for _, w := range tinyWorkloads() {
		full, _ := rep.find(w.Name, Overlayfs)
		for _, m := range modes[1:] {
			lazy, _ := rep.find(w.Name, m)
			if lazy.MBAtReady.Median >= full.MBAtReady.Median {
				t.Errorf("%s/%s fetched %.2f MB before ready; overlayfs %.2f MB: want less",
					w.Name, m, lazy.MBAtReady.Median, full.MBAtReady.Median)
			}
		}
	}
	checkRecorded(t, cache, `"data/small/file000"`, "data/big/")
	left, err := s.Footprint().Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("teardown left %v", left)
	}
}
