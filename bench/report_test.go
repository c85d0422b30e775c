package bench

import "testing"

func TestSpread(t *testing.T) {
	rs := []Result{{ReadySeconds: 3}, {ReadySeconds: 1}, {ReadySeconds: 2}, {ReadySeconds: 10}}
	got := spread(rs, func(r Result) float64 { return r.ReadySeconds })
	if want := (Spread{Median: 2.5, Min: 1, Max: 10}); got != want {
		t.Errorf("spread = %+v; want %+v", got, want)
	}
	if got := spread(rs[:3], func(r Result) float64 { return r.ReadySeconds }); got.Median != 2 {
		t.Errorf("median of 3 = %v; want 2", got.Median)
	}
}

func TestRotate(t *testing.T) {
	ms := DefaultModes()
	n := len(ms) + 1 // a full turn and one more: the same as rotating by 1
	got := rotate(ms, n)
	if len(got) != len(ms) || got[0] != ms[1] || got[len(got)-1] != ms[0] {
		t.Errorf("rotate(%v, %d) = %v", ms, n, got)
	}
}

// TestFloor: the floor is the local start, plus the fewest bytes any lazy
// mode fetched before ready at the link rate, plus 3 round trips; the
// full pull's bytes do not count.
func TestFloor(t *testing.T) {
	r := &Report{Config: Config{RateMbit: 200, DelayMS: 20, Workloads: []WorkloadInfo{{Name: "w"}},
		Modes: []Mode{Local, Overlayfs, Lazy, Soci}}}
	for _, res := range []Result{
		{Workload: "w", Mode: Local, ReadySeconds: 4},
		{Workload: "w", Mode: Overlayfs, ReadySeconds: 30, BytesAtReady: 10e6},
		{Workload: "w", Mode: Lazy, ReadySeconds: 10, BytesAtReady: 100e6},
		{Workload: "w", Mode: Soci, ReadySeconds: 9, BytesAtReady: 150e6},
	} {
		r.add(res)
	}
	r.summarize()
	if len(r.Floors) != 1 {
		t.Fatalf("floors %+v", r.Floors)
	}
	f := r.Floors[0]
	want := 4 + 100*8/200.0 + 0.06
	if f.NeededBy != Lazy || f.MBNeeded != 100 || f.Seconds < want-1e-9 || f.Seconds > want+1e-9 {
		t.Fatalf("floor %+v, want %.2f s from lazysnap's 100 MB", f, want)
	}
}
