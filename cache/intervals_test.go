package cache

import (
	"slices"
	"testing"
)

func TestIntervalsAdd(t *testing.T) {
	tests := []struct {
		name  string
		adds  []span
		want  []span
		added []int64
	}{
		{"single", []span{{0, 10}}, []span{{0, 10}}, []int64{10}},
		{"disjoint sorted", []span{{20, 30}, {0, 10}}, []span{{0, 10}, {20, 30}}, []int64{10, 10}},
		{"touching merges", []span{{0, 10}, {10, 20}}, []span{{0, 20}}, []int64{10, 10}},
		{"overlap", []span{{0, 10}, {5, 15}}, []span{{0, 15}}, []int64{10, 5}},
		{"contained", []span{{0, 10}, {2, 8}}, []span{{0, 10}}, []int64{10, 0}},
		{"bridge", []span{{0, 10}, {20, 30}, {40, 50}, {5, 45}}, []span{{0, 50}}, []int64{10, 10, 10, 20}},
		{"covers several", []span{{10, 20}, {30, 40}, {0, 100}}, []span{{0, 100}}, []int64{10, 10, 80}},
		{"empty ignored", []span{{5, 5}}, nil, []int64{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var iv intervals
			var total int64
			for i, s := range tt.adds {
				if got := iv.add(s.start, s.end); got != tt.added[i] {
					t.Errorf("add(%v) = %d new bytes, want %d", s, got, tt.added[i])
				}
				total += tt.added[i]
			}
			if !slices.Equal(iv.spans, tt.want) {
				t.Errorf("spans = %v, want %v", iv.spans, tt.want)
			}
			if iv.bytes != total {
				t.Errorf("bytes = %d, want %d", iv.bytes, total)
			}
		})
	}
}

func TestIntervalsContains(t *testing.T) {
	var iv intervals
	iv.add(10, 20)
	iv.add(30, 40)
	tests := []struct {
		start, end int64
		want       bool
	}{
		{10, 20, true}, {12, 18, true}, {5, 15, false}, {15, 25, false},
		{20, 30, false}, {10, 40, false}, {35, 40, true}, {39, 41, false},
		{0, 0, true}, {25, 25, true},
	}
	for _, tt := range tests {
		if got := iv.contains(tt.start, tt.end); got != tt.want {
			t.Errorf("contains(%d, %d) = %v, want %v", tt.start, tt.end, got, tt.want)
		}
	}
}

func TestIntervalsRemove(t *testing.T) {
	tests := []struct {
		name    string
		remove  span
		want    []span
		removed int64
	}{
		{"whole span", span{10, 20}, []span{{30, 40}}, 10},
		{"middle splits", span{12, 15}, []span{{10, 12}, {15, 20}, {30, 40}}, 3},
		{"head", span{5, 12}, []span{{12, 20}, {30, 40}}, 2},
		{"tail", span{18, 25}, []span{{10, 18}, {30, 40}}, 2},
		{"across both", span{15, 35}, []span{{10, 15}, {35, 40}}, 10},
		{"gap only", span{20, 30}, []span{{10, 20}, {30, 40}}, 0},
		{"everything", span{0, 100}, []span{}, 20},
		{"empty", span{15, 15}, []span{{10, 20}, {30, 40}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var iv intervals
			iv.add(10, 20)
			iv.add(30, 40)
			if got := iv.remove(tt.remove.start, tt.remove.end); got != tt.removed {
				t.Errorf("remove(%v) = %d bytes, want %d", tt.remove, got, tt.removed)
			}
			if !slices.Equal(iv.spans, tt.want) {
				t.Errorf("spans = %v, want %v", iv.spans, tt.want)
			}
			if iv.bytes != 20-tt.removed {
				t.Errorf("bytes = %d, want %d", iv.bytes, 20-tt.removed)
			}
		})
	}
}

func TestIntervalsGaps(t *testing.T) {
	var iv intervals
	iv.add(10, 20)
	iv.add(30, 40)
	tests := []struct {
		start, end int64
		want       []span
	}{
		{10, 20, nil}, {12, 18, nil}, {0, 50, []span{{0, 10}, {20, 30}, {40, 50}}},
		{15, 35, []span{{20, 30}}}, {20, 30, []span{{20, 30}}}, {42, 45, []span{{42, 45}}},
		{5, 15, []span{{5, 10}}}, {25, 25, nil},
	}
	for _, tt := range tests {
		if got := iv.gaps(tt.start, tt.end); !slices.Equal(got, tt.want) {
			t.Errorf("gaps(%d, %d) = %v, want %v", tt.start, tt.end, got, tt.want)
		}
	}
}
