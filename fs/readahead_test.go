package fs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// readAheadLayer is a layer whose files, in tar (blob) order, are small
// neighbours a, b, c, a big file and a small d. Random content does not
// compress, so each file is about its size in the blob.
func readAheadLayer() []tentry {
	return []tentry{
		dir("pkg/", 0o755),
		reg("pkg/a", 2<<10, 1),
		reg("pkg/b", 32<<10, 2),
		reg("pkg/c", 4<<10, 3),
		reg("pkg/big", 512<<10, 4),
		reg("pkg/d", 4<<10, 5),
	}
}

// readAheadMount mounts the layer through a recording proxy with the given
// read-ahead budget, and returns the mountpoint, the entries by name and the
// proxy.
func readAheadMount(t *testing.T, repo string, opts ...lfs.Option) (string, map[string]tentry, *rangeProxy) {
	t.Helper()
	testenv.RequireFUSE(t)
	reg := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, reg.Host, 0)
	es := readAheadLayer()
	l := buildLayer(t, es, estargz.WithChunkSize(1<<20))
	push(t, reg.Host, repo, l)
	mp := mount(t, newFS(t, opts...), proxy.Host+"/"+repo, l)
	byName := map[string]tentry{}
	for _, e := range es {
		byName[filepath.Base(e.name)] = e
	}
	return mp, byName, proxy
}

// readNew reads file name of the mount, checks its content and returns the
// blob requests the read sent.
func readNew(t *testing.T, mp string, es map[string]tentry, proxy *rangeProxy, name string) []blobRange {
	t.Helper()
	before := len(proxy.Requests())
	got, err := os.ReadFile(filepath.Join(mp, "pkg", name))
	if err != nil {
		t.Fatal(err)
	}
	e := es[name]
	if want := expected(t, e, 0, e.size); !bytes.Equal(got, want) {
		t.Fatalf("%s: content differs", name)
	}
	return proxy.Requests()[before:]
}

// TestReadAheadBringsNeighbours reads a and finds its neighbours b and c
// fetched in the same request, but not big (past the budget) nor d after
// it.
func TestReadAheadBringsNeighbours(t *testing.T) {
	mp, es, proxy := readAheadMount(t, "ra/next:v1", lfs.WithReadAhead(128<<10))
	if rs := readNew(t, mp, es, proxy, "a"); len(rs) != 1 {
		t.Fatalf("reading a sent %d requests, want 1: %v", len(rs), rs)
	} else if rs[0].len() < 36<<10 || rs[0].len() > 128<<10 {
		t.Errorf("reading a asked for %d bytes: want a, b and c (about 38 KiB) and not big", rs[0].len())
	}
	for _, name := range []string{"b", "c"} {
		if rs := readNew(t, mp, es, proxy, name); len(rs) != 0 {
			t.Errorf("reading %s after a sent %d requests, want none (read ahead with a): %v", name, len(rs), rs)
		}
	}
	if rs := readNew(t, mp, es, proxy, "d"); len(rs) != 1 {
		t.Errorf("reading d, past the budget, sent %d requests, want 1: %v", len(rs), rs)
	}
}

// TestReadAheadSkipsPresent reads b (bringing c) and then a: a's request
// stops before b, which is cached, instead of fetching it again.
func TestReadAheadSkipsPresent(t *testing.T) {
	mp, es, proxy := readAheadMount(t, "ra/present:v1", lfs.WithReadAhead(128<<10))
	if rs := readNew(t, mp, es, proxy, "b"); len(rs) != 1 {
		t.Fatalf("reading b sent %d requests, want 1: %v", len(rs), rs)
	}
	if rs := readNew(t, mp, es, proxy, "c"); len(rs) != 0 {
		t.Errorf("reading c after b sent %d requests, want none: %v", len(rs), rs)
	}
	rs := readNew(t, mp, es, proxy, "a")
	if len(rs) != 1 {
		t.Fatalf("reading a sent %d requests, want 1: %v", len(rs), rs)
	}
	// b is 32 KiB of random bytes: a request holding it is larger.
	if rs[0].len() >= 16<<10 {
		t.Errorf("reading a asked for %d bytes: it read ahead into the cached b", rs[0].len())
	}
}

// TestReadAheadOff checks that a read-ahead budget of 0 fetches only what
// is read: every file costs its own request.
func TestReadAheadOff(t *testing.T) {
	mp, es, proxy := readAheadMount(t, "ra/off:v1", lfs.WithReadAhead(0))
	for _, name := range []string{"a", "b", "c"} {
		if rs := readNew(t, mp, es, proxy, name); len(rs) != 1 {
			t.Errorf("reading %s without read-ahead sent %d requests, want 1: %v", name, len(rs), rs)
		}
	}
}
