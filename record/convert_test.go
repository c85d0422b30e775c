package record

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// The exported trace, read back and given to the converter, puts the
// recorded files before the prefetch landmark of the layer providing each,
// in the recorded order.
func TestExportedTraceConvertsInRecordedOrder(t *testing.T) {
	img := scriptImage(t, "cat /data/b /data/c >/dev/null\necho READY\nsleep 1000\n")
	res, _ := record(t, img, WithWaitLine("READY"))
	var list bytes.Buffer
	if _, err := res.Trace.WriteTo(&list); err != nil {
		t.Fatal(err)
	}
	parsed, err := prefetchlist.Read(&list)
	if err != nil || len(parsed.Rejected) != 0 {
		t.Fatalf("reading the list: %v %v", err, parsed.Rejected)
	}
	trace := parsed.Paths
	var warnings []string
	c, err := convert.New(convert.WithPrioritizedFiles(trace), convert.WithWorkDir(t.TempDir()),
		convert.WithWarnFunc(func(msg string, _ ...any) { warnings = append(warnings, msg) }))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, err := c.Image(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("converter warned: %q", warnings)
	}
	layers, err := out.Layers()
	if err != nil {
		t.Fatal(err)
	}
	placed := 0
	for i, l := range layers {
		placed += checkPrefetchOrder(t, i, l, trace)
	}
	if placed != len(trace) {
		t.Errorf("%d of the %d recorded files are before a landmark", placed, len(trace))
	}
}

// checkPrefetchOrder checks that the files of trace layer l holds are before
// its landmark in trace order, and returns how many it holds.
func checkPrefetchOrder(t *testing.T, i int, l v1.Layer, trace []string) int {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))))
	if err != nil {
		t.Fatalf("layer %d: %v", i, err)
	}
	landmark, ok := r.Lookup(estargz.PrefetchLandmark)
	if !ok {
		landmark = &estargz.TOCEntry{Offset: -1}
	}
	prev, n := int64(-1), 0
	for _, p := range trace {
		e, ok := r.Lookup(strings.TrimPrefix(p, "/"))
		if !ok || e.Type != "reg" {
			continue
		}
		n++
		if e.Offset <= prev || e.Offset >= landmark.Offset {
			t.Errorf("layer %d: %s at offset %d (previous recorded file at %d, landmark at %d)", i, p, e.Offset, prev, landmark.Offset)
		}
		prev = e.Offset
	}
	return n
}
