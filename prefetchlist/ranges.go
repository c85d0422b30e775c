package prefetchlist

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Range is the half-open byte range [Start, End) of a file.
type Range struct {
	Start, End int64
}

// MaxRanges bounds the ranges kept per file, so that a directive line
// stays under MaxLine whatever its offsets (1024 ranges of at most 40
// characters each). A trace records reads at TOC chunk granularity, so
// real files stay below it (1024 ranges need a file of at least 2047
// chunks); beyond it the ranges closest to each other are coalesced, which
// only prefetches a little more.
const MaxRanges = 1024

// RangedMinSize is the size from which a file's ranges are worth
// recording and using: a smaller file costs less than one round trip's
// worth of bytes (about 500 KB in flight at 200 Mbit/s and 20 ms) more
// than its read part, so it is taken whole. Recorders record no ranges
// below it and the converter ignores them; it lives here, in the leaf
// package both import, so that they cannot disagree.
const RangedMinSize = 1 << 20

// rangesDirective starts a directive line giving the ranges of the path
// on the line before.
const rangesDirective = "#@ranges"

// Normalize returns rs sorted by start, with empty ranges dropped and
// overlapping or touching ranges merged, coalescing the ranges separated
// by the smallest gaps until at most MaxRanges remain. It does not modify
// rs.
func Normalize(rs []Range) []Range {
	out := make([]Range, 0, len(rs))
	for _, r := range rs {
		if r.End > r.Start {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Range) int { return cmp.Compare(a.Start, b.Start) })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.Start <= merged[n-1].End {
			merged[n-1].End = max(merged[n-1].End, r.End)
			continue
		}
		merged = append(merged, r)
	}
	if len(merged) == 0 {
		return nil
	}
	return coalesce(merged, MaxRanges)
}

// coalesce joins the ranges of sorted, disjoint rs across their smallest
// gaps until at most limit remain.
func coalesce(rs []Range, limit int) []Range {
	if len(rs) <= limit {
		return rs
	}
	gaps := make([]int, len(rs)-1) // gaps[i] is between rs[i] and rs[i+1]
	for i := range gaps {
		gaps[i] = i
	}
	gapSize := func(i int) int64 { return rs[i+1].Start - rs[i].End }
	slices.SortStableFunc(gaps, func(a, b int) int { return cmp.Compare(gapSize(a), gapSize(b)) })
	join := make([]bool, len(rs)-1)
	for _, g := range gaps[:len(rs)-limit] {
		join[g] = true
	}
	out := rs[:1]
	for i := 1; i < len(rs); i++ {
		if join[i-1] {
			out[len(out)-1].End = rs[i].End
			continue
		}
		out = append(out, rs[i])
	}
	return out
}

// isDirective reports whether line (trimmed) is a ranges directive: the
// word "#@ranges" alone or followed by white space. Other "#@" lines are
// comments, left for directives a later version may add.
func isDirective(line string) bool {
	rest, ok := strings.CutPrefix(line, rangesDirective)
	return ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t')
}

// parseRanges parses a directive line's ranges, or says why it cannot.
// They must be sorted and disjoint as written (touching ones are merged):
// a list out of order is damage or a foreign writer, not something to
// guess at.
func parseRanges(line string) ([]Range, string) {
	list := strings.TrimSpace(strings.TrimPrefix(line, rangesDirective))
	if list == "" {
		return nil, "gives no ranges"
	}
	var out []Range
	for item := range strings.SplitSeq(list, ",") {
		s, e, ok := strings.Cut(item, "-")
		start, err1 := parseOffset(s)
		end, err2 := parseOffset(e)
		switch {
		case !ok || err1 != nil || err2 != nil:
			return nil, fmt.Sprintf("has a malformed range %q (want START-END, decimal)", item)
		case end <= start:
			return nil, fmt.Sprintf("has an empty range %q", item)
		case len(out) > 0 && start < out[len(out)-1].End:
			return nil, fmt.Sprintf("has a range %q out of order or overlapping", item)
		}
		out = append(out, Range{start, end})
	}
	return Normalize(out), ""
}

// parseOffset parses a decimal byte offset: digits only, no sign.
func parseOffset(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseInt(s, 10, 64)
}

// formatRanges writes rs as a directive line, without the line break.
func formatRanges(rs []Range) string {
	var b strings.Builder
	b.WriteString(rangesDirective + " ")
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(r.Start, 10))
		b.WriteByte('-')
		b.WriteString(strconv.FormatInt(r.End, 10))
	}
	return b.String()
}

// validRanges reports why rs cannot be written, or "".
func validRanges(rs []Range) string {
	for _, r := range rs {
		if r.Start < 0 || r.End <= r.Start {
			return fmt.Sprintf("range [%d, %d) is empty or negative", r.Start, r.End)
		}
	}
	return ""
}
