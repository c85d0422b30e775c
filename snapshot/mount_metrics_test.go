package snapshot

import (
	"context"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestMountDurationHistogram times one lazy mount and one that falls back,
// each under its result label, on the registry the snapshotter was given.
func TestMountDurationHistogram(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	fsys := newBindFS(t)
	reg := prometheus.NewRegistry()
	s, err := New(ctx, t.TempDir(), fsys, WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	if _, err := s.Prepare(ctx, "extract-1", "", remoteOpts("chain-1", "sha256:aaa")); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("lazy Prepare: %v", err)
	}
	fsys.failWith = fmt.Errorf("no TOC: %w", errdefs.ErrNotImplemented)
	if _, err := s.Prepare(ctx, "extract-2", "", remoteOpts("chain-2", "sha256:bbb")); err != nil {
		t.Fatalf("fallback Prepare: %v", err)
	}
	got := histogramCounts(t, reg, "lazysnap_snapshot_mount_duration_seconds")
	if got[MountResultLazy] != 1 || got[MountResultFallback] != 1 {
		t.Errorf("mount duration samples by result = %v, want one lazy and one fallback", got)
	}
	// Unmounts the lazy layer, which would otherwise outlive the test's dir.
	if err := s.Remove(ctx, "chain-1"); err != nil {
		t.Fatal(err)
	}
}

// histogramCounts returns the sample count of each series of a histogram,
// keyed by its "result" label.
func histogramCounts(t *testing.T, reg *prometheus.Registry, name string) map[string]uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return out
}
