package record

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

func TestTraceRoundTrip(t *testing.T) {
	tr := Trace{
		Paths:  []string{"/bin/busybox", "/etc/app config.yaml", "/usr/lib/libc.so.6", "/#not-a-comment"},
		Ranges: map[string][]prefetchlist.Range{"/usr/lib/libc.so.6": {{Start: 8192, End: 16384}, {Start: 0, End: 4096}}},
	}
	var buf bytes.Buffer
	n, err := tr.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo: %d, %v; wrote %d", n, err, buf.Len())
	}
	got, err := prefetchlist.Read(&buf)
	if err != nil || len(got.Rejected) != 0 {
		t.Fatalf("Read: %v, rejected %v", err, got.Rejected)
	}
	if !slices.Equal(got.Paths, tr.Paths) {
		t.Errorf("round trip gave %q, want %q", got.Paths, tr.Paths)
	}
	want := map[string][]prefetchlist.Range{"/usr/lib/libc.so.6": {{Start: 0, End: 4096}, {Start: 8192, End: 16384}}}
	if !reflect.DeepEqual(got.Ranges, want) {
		t.Errorf("round trip gave ranges %v, want %v", got.Ranges, want)
	}
}

// TestTraceRefusesLineBreaks: a Trace built by hand with a name the list
// cannot hold is refused rather than written as two lines.
func TestTraceRefusesLineBreaks(t *testing.T) {
	var buf bytes.Buffer
	if _, err := (Trace{Paths: []string{"/a\n/etc/shadow"}}).WriteTo(&buf); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("WriteTo = %v, want ErrInvalidArgument", err)
	}
}
