package prefetchlist

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestRangesRoundTrip(t *testing.T) {
	paths := []string{"/bin/java", "/lib/modules", "/etc/conf"}
	ranges := map[string][]Range{
		// Unsorted, overlapping and touching: written normalized.
		"/lib/modules": {{8 << 20, 12 << 20}, {0, 4 << 20}, {4 << 20, 5 << 20}, {10 << 20, 16 << 20}},
		"/etc/conf":    {{0, 1}},
	}
	var buf bytes.Buffer
	if err := Write(&buf, []string{"c"}, paths, WithRanges(ranges)); err != nil {
		t.Fatal(err)
	}
	want := "# c\n/bin/java\n/lib/modules\n#@ranges 0-5242880,8388608-16777216\n/etc/conf\n#@ranges 0-1\n"
	if buf.String() != want {
		t.Fatalf("wrote\n%s\nwant\n%s", buf.String(), want)
	}
	got, err := Read(&buf)
	if err != nil || len(got.Rejected) != 0 {
		t.Fatalf("Read: %v, rejected %v", err, got.Rejected)
	}
	wantRanges := map[string][]Range{"/lib/modules": {{0, 5 << 20}, {8 << 20, 16 << 20}}, "/etc/conf": {{0, 1}}}
	if !slices.Equal(got.Paths, paths) || !reflect.DeepEqual(got.Ranges, wantRanges) {
		t.Fatalf("read %q %v, want %q %v", got.Paths, got.Ranges, paths, wantRanges)
	}
	if slices.ContainsFunc(got.Comments, func(c string) bool { return strings.Contains(c, "ranges") }) {
		t.Errorf("a directive came back as a comment: %q", got.Comments)
	}
}

// TestRangesRejected: a bad directive is rejected by its line number and
// its path is kept, whole; nothing else is lost.
func TestRangesRejected(t *testing.T) {
	for _, c := range []struct{ name, directive string }{
		{"no ranges", "#@ranges"},
		{"no ranges after space", "#@ranges   "},
		{"not a range", "#@ranges 12"},
		{"negative", "#@ranges -1-5"},
		{"sign", "#@ranges +1-5"},
		{"hex", "#@ranges 0x10-0x20"},
		{"empty range", "#@ranges 5-5"},
		{"reversed", "#@ranges 9-5"},
		{"unsorted", "#@ranges 10-20,0-5"},
		{"overlapping", "#@ranges 0-10,5-20"},
		{"trailing comma", "#@ranges 0-10,"},
		{"spaces inside", "#@ranges 0-10, 20-30"},
		{"overflow", "#@ranges 0-99999999999999999999"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Read(strings.NewReader("/a\n" + c.directive + "\n/b\n#@ranges 0-1\n"))
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Rejected) != 1 || got.Rejected[0].Line != 2 {
				t.Fatalf("rejected %v, want line 2", got.Rejected)
			}
			if !slices.Equal(got.Paths, []string{"/a", "/b"}) || !reflect.DeepEqual(got.Ranges, map[string][]Range{"/b": {{0, 1}}}) {
				t.Errorf("read %q %v, want /a whole and /b's range", got.Paths, got.Ranges)
			}
		})
	}
}

// TestRangesMustFollowAPath: a directive applies to the accepted path on
// the line before it (blank lines aside), and to nothing else.
func TestRangesMustFollowAPath(t *testing.T) {
	in := strings.Join([]string{
		"#@ranges 0-1",  // 1: first line
		"/a",            // 2
		"",              // 3
		"#@ranges 0-10", // 4: /a's, across a blank line
		"#@ranges 0-20", // 5: a second one
		"/b",            // 6
		"# comment",     // 7
		"#@ranges 0-1",  // 8: after a comment
		"/a",            // 9: repeated
		"#@ranges 0-1",  // 10: after a rejected path
		"../x",          // 11
		"#@ranges 0-1",  // 12: after a hostile path
		"#@rangesX 1-2", // 13: another word, a comment
		"#@future 1-2",  // 14: a later directive, a comment
	}, "\n")
	got, err := Read(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var lines []int
	for _, r := range got.Rejected {
		lines = append(lines, r.Line)
	}
	if want := []int{1, 5, 8, 9, 10, 11, 12}; !slices.Equal(lines, want) {
		t.Errorf("rejected lines %v (%v), want %v", lines, got.Rejected, want)
	}
	if want := map[string][]Range{"/a": {{0, 10}}}; !reflect.DeepEqual(got.Ranges, want) {
		t.Errorf("ranges %v, want %v", got.Ranges, want)
	}
	if want := []string{"comment", "@rangesX 1-2", "@future 1-2"}; !slices.Equal(got.Comments, want) {
		t.Errorf("comments %q, want %q", got.Comments, want)
	}
}

func TestWriteRefusesBadRanges(t *testing.T) {
	for name, rs := range map[string]map[string][]Range{
		"unlisted path": {"/other": {{0, 1}}},
		"empty":         {"/a": {{3, 3}}},
		"reversed":      {"/a": {{5, 3}}},
		"negative":      {"/a": {{-1, 3}}},
	} {
		var buf bytes.Buffer
		if err := Write(&buf, nil, []string{"/a"}, WithRanges(rs)); !errors.Is(err, errdefs.ErrInvalidArgument) || buf.Len() != 0 {
			t.Errorf("%s: %v, wrote %q", name, err, buf.String())
		}
	}
}

// TestManyRangesCoalesced: more than MaxRanges ranges are coalesced across
// the smallest gaps, and even the longest directive reads back.
func TestManyRangesCoalesced(t *testing.T) {
	var rs []Range
	for i := range int64(3 * MaxRanges) {
		gap := int64(10)
		if i%3 == 0 {
			gap = 1000 // the gaps that stay
		}
		start := i * 100000
		rs = append(rs, Range{start + gap, start + 50000})
	}
	got := Normalize(rs)
	if len(got) != MaxRanges {
		t.Fatalf("%d ranges, want %d", len(got), MaxRanges)
	}
	covered := func(off int64) bool {
		return slices.ContainsFunc(got, func(r Range) bool { return r.Start <= off && off < r.End })
	}
	for _, r := range rs {
		if !covered(r.Start) || !covered(r.End-1) {
			t.Fatalf("range %v lost", r)
		}
	}

	// The longest offsets: the line stays under MaxLine.
	huge := make([]Range, 0, 2*MaxRanges)
	for i := range int64(2 * MaxRanges) {
		huge = append(huge, Range{math.MaxInt64 - 3*(i+1), math.MaxInt64 - 3*(i+1) + 1})
	}
	var buf bytes.Buffer
	if err := Write(&buf, nil, []string{"/big"}, WithRanges(map[string][]Range{"/big": huge})); err != nil {
		t.Fatal(err)
	}
	l, err := Read(&buf)
	if err != nil || len(l.Ranges["/big"]) != MaxRanges {
		t.Fatalf("read back %d ranges, %v", len(l.Ranges["/big"]), err)
	}
}

// FuzzRead: whatever the input, Read keeps its promises (ranges only for
// its paths, normalized, bounded), and what it read writes and reads back
// the same.
func FuzzRead(f *testing.F) {
	f.Add("/a\n#@ranges 0-10,20-30\n/b\n")
	f.Add("#@ranges 1-2\n/a\n\n#@ranges 5-9\n#@ranges 1-3\n")
	f.Add("/a\n#@ranges 0-5,5-9,12-13\n/a\n#@ranges 0-1\n")
	f.Fuzz(func(t *testing.T, in string) {
		l, err := Read(strings.NewReader(in))
		invalid := func(p string) bool { return !Valid(p) }
		if err != nil || slices.ContainsFunc(l.Paths, invalid) { // Read cleans less than Write asks ("/a\rb")
			return
		}
		for p, rs := range l.Ranges {
			if !slices.Contains(l.Paths, p) {
				t.Fatalf("ranges of %q, not a path read", p)
			}
			if !reflect.DeepEqual(Normalize(rs), rs) || len(rs) == 0 || len(rs) > MaxRanges {
				t.Fatalf("ranges of %q not normalized: %v", p, rs)
			}
		}
		var buf bytes.Buffer
		if err := Write(&buf, nil, l.Paths, WithRanges(l.Ranges)); err != nil {
			t.Fatalf("writing what was read: %v", err)
		}
		again, err := Read(&buf)
		if err != nil || !slices.Equal(again.Paths, l.Paths) || !maps.EqualFunc(again.Ranges, l.Ranges, slices.Equal) {
			t.Fatalf("read back %q %v (%v), want %q %v", again.Paths, again.Ranges, err, l.Paths, l.Ranges)
		}
	})
}

func ExampleWrite_ranges() {
	var buf bytes.Buffer
	err := Write(&buf, nil, []string{"/bin/java", "/lib/modules"},
		WithRanges(map[string][]Range{"/lib/modules": {{0, 4 << 20}, {16 << 20, 20 << 20}}}))
	fmt.Print(buf.String(), err)
	// Output:
	// /bin/java
	// /lib/modules
	// #@ranges 0-4194304,16777216-20971520
	// <nil>
}
