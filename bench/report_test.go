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
