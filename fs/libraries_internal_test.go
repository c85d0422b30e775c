package fs

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/fs/index"
)

func testIndex(t *testing.T, entries string) *index.Index {
	t.Helper()
	toc, err := index.Decode(context.Background(), strings.NewReader(`{"version":1,"entries":[`+entries+`]}`))
	if err != nil {
		t.Fatal(err)
	}
	x, err := index.Build(context.Background(), toc, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestLookupIndexes: a library's path is found through links in either
// layer (/lib -> usr/lib in the base, a relative versioned link in the
// top), the top layer's file wins, and a loop of links or a path through a
// regular file finds nothing.
func TestLookupIndexes(t *testing.T) {
	top := testIndex(t, `
		{"name":"usr/","type":"dir","mode":493},
		{"name":"usr/lib/","type":"dir","mode":493},
		{"name":"usr/lib/libx.so.1","type":"symlink","linkName":"libx.so.1.2"},
		{"name":"usr/lib/libx.so.1.2","type":"reg","mode":420},
		{"name":"usr/lib/libboth.so","type":"reg","mode":420},
		{"name":"loop1","type":"symlink","linkName":"/loop2"},
		{"name":"loop2","type":"symlink","linkName":"loop1"}`)
	base := testIndex(t, `
		{"name":"lib","type":"symlink","linkName":"usr/lib"},
		{"name":"usr/","type":"dir","mode":493},
		{"name":"usr/lib/","type":"dir","mode":493},
		{"name":"usr/lib/libboth.so","type":"reg","mode":420},
		{"name":"usr/lib/libbase.so","type":"reg","mode":420}`)
	idxs := []*index.Index{top, base}
	for _, tc := range []struct {
		path  string
		layer int // -1: not found
	}{
		{"/lib/libx.so.1", 0},
		{"/usr/lib/libx.so.1", 0},
		{"/lib/libbase.so", 1},
		{"/lib/libboth.so", 0},
		{"/loop1/libx.so", -1},
		{"/usr/lib/libx.so.1.2/sub", -1},
		{"/usr/lib/missing.so", -1},
		{"/usr/lib", -1},
	} {
		i, id, ok := lookupIndexes(idxs, tc.path)
		switch {
		case tc.layer < 0 && ok:
			t.Errorf("%s: found in layer %d, want nothing", tc.path, i)
		case tc.layer >= 0 && (!ok || i != tc.layer):
			t.Errorf("%s: layer %d, found %v; want layer %d", tc.path, i, ok, tc.layer)
		case ok && idxs[i].Mode(id)&syscall.S_IFMT != syscall.S_IFREG:
			t.Errorf("%s: not a regular file", tc.path)
		}
	}
}
