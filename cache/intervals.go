package cache

import (
	"slices"
	"sort"
)

// span is the half-open byte range [start, end).
type span struct{ start, end int64 }

// intervals is a set of byte ranges kept sorted by start with no two spans
// touching or overlapping, so lookups are a binary search and the set stays
// as small as the number of holes in the file. Not safe for concurrent use.
type intervals struct {
	spans []span
	bytes int64 // sum of span lengths, kept so accounting is O(1)
}

// add inserts [start, end) and returns how many bytes were not present
// before, which is what the store accounts against its size bound.
func (iv *intervals) add(start, end int64) (added int64) {
	if start >= end {
		return 0
	}
	// first span that ends at or after start: it may touch or overlap.
	i := sort.Search(len(iv.spans), func(k int) bool { return iv.spans[k].end >= start })
	// j is one past the last span that starts at or before end.
	j := i
	merged := span{start, end}
	var covered int64
	for j < len(iv.spans) && iv.spans[j].start <= end {
		s := iv.spans[j]
		covered += s.end - s.start
		merged.start = min(merged.start, s.start)
		merged.end = max(merged.end, s.end)
		j++
	}
	added = (merged.end - merged.start) - covered
	if j > i {
		// Replace the merged spans in place; the common sequential write
		// just extends one span and allocates nothing.
		iv.spans[i] = merged
		iv.spans = append(iv.spans[:i+1], iv.spans[j:]...)
	} else {
		iv.spans = slices.Insert(iv.spans, i, merged)
	}
	iv.bytes += added
	return added
}

// contains reports whether all of [start, end) is in the set. An empty
// range is always contained.
func (iv *intervals) contains(start, end int64) bool {
	if start >= end {
		return true
	}
	i := sort.Search(len(iv.spans), func(k int) bool { return iv.spans[k].end > start })
	return i < len(iv.spans) && iv.spans[i].start <= start && iv.spans[i].end >= end
}

// remove deletes [start, end) from the set and returns how many bytes were
// in it.
func (iv *intervals) remove(start, end int64) (removed int64) {
	if start >= end {
		return 0
	}
	// i is the first span that ends after start, j one past the last span
	// that starts before end: spans[i:j] overlap the range.
	i := sort.Search(len(iv.spans), func(k int) bool { return iv.spans[k].end > start })
	j := i
	for j < len(iv.spans) && iv.spans[j].start < end {
		j++
	}
	if i == j {
		return 0
	}
	var keep []span
	for _, s := range iv.spans[i:j] {
		removed += min(s.end, end) - max(s.start, start)
		if s.start < start {
			keep = append(keep, span{s.start, start})
		}
		if s.end > end {
			keep = append(keep, span{end, s.end})
		}
	}
	iv.spans = slices.Replace(iv.spans, i, j, keep...)
	iv.bytes -= removed
	return removed
}

// gaps returns the parts of [start, end) that are not in the set, in order.
func (iv *intervals) gaps(start, end int64) []span {
	var out []span
	i := sort.Search(len(iv.spans), func(k int) bool { return iv.spans[k].end > start })
	for ; start < end && i < len(iv.spans) && iv.spans[i].start < end; i++ {
		if s := iv.spans[i]; s.start > start {
			out = append(out, span{start, s.start})
		}
		start = max(start, iv.spans[i].end)
	}
	if start < end {
		out = append(out, span{start, end})
	}
	return out
}
