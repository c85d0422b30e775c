package node

import (
	"archive/tar"
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

const readsChunk = 64 << 10

// readsLayer is a layer of a large file (32 chunks), a small file of two
// chunks and a file of RangedMinSize, read through the bridge with
// WithReadRanges.
func readsLayer(t testing.TB) *Mounted {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	rnd := rand.NewChaCha8([32]byte{1})
	for _, f := range []struct {
		name string
		size int64
	}{{"lib/modules", 32 * readsChunk}, {"etc/small", 2 * readsChunk}, {"lib/edge", RangedMinSize}} {
		data := make([]byte, f.size)
		rnd.Read(data)
		h := &tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: f.size, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	o := defaultOptions()
	o.readRanges = true
	m, _ := bridgeOf(t, buf.Bytes(), o, estargz.WithChunkSize(readsChunk))
	return m
}

// readAt reads n bytes at off of the file at path through the bridge.
func readAt(t testing.TB, m *Mounted, path string, off, n int64) {
	t.Helper()
	id := uint64(1)
	for _, name := range bytes.Split([]byte(path), []byte("/")) {
		id = lookup(t.(*testing.T), m.raw, id, string(name)).NodeId
	}
	var open fuse.OpenOut
	if st := m.raw.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: id}}, &open); !st.Ok() {
		t.Fatal(st)
	}
	defer m.raw.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: id}, Fh: open.Fh})
	in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: id}, Fh: open.Fh, Offset: uint64(off), Size: uint32(n)}
	if _, st := m.raw.Read(nil, in, make([]byte, n)); !st.Ok() {
		t.Fatal(st)
	}
}

// TestReadRangesAtChunkGranularity: reads of a large file come back as
// the byte ranges of the chunks they touched, neighbours joined; files
// smaller than RangedMinSize have none (they are prefetched whole).
func TestReadRangesAtChunkGranularity(t *testing.T) {
	m := readsLayer(t)
	if got := m.ReadRanges(); len(got) != 0 {
		t.Fatalf("ranges before any read: %v", got)
	}
	readAt(t, m, "lib/modules", 0, 4096)              // chunk 0
	readAt(t, m, "lib/modules", readsChunk-10, 20)    // chunks 0 and 1
	readAt(t, m, "lib/modules", 10*readsChunk+5, 100) // chunk 10
	readAt(t, m, "lib/modules", 31*readsChunk, 1<<20) // the last chunk, asked past the end
	readAt(t, m, "etc/small", readsChunk, 4096)
	readAt(t, m, "lib/edge", 3*readsChunk, 4096)
	want := map[string][]prefetchlist.Range{"/lib/modules": {
		{Start: 0, End: 2 * readsChunk},
		{Start: 10 * readsChunk, End: 11 * readsChunk},
		{Start: 31 * readsChunk, End: 32 * readsChunk},
	}, "/lib/edge": {{Start: 3 * readsChunk, End: 4 * readsChunk}}}
	if got := m.ReadRanges(); !reflect.DeepEqual(got, want) {
		t.Errorf("ranges %v, want %v", got, want)
	}
	if got := m.ReadRanges(); !reflect.DeepEqual(got, want) {
		t.Errorf("asked again: %v, want the same %v", got, want)
	}
}

func TestReadRangesOff(t *testing.T) {
	raw, _ := bridge(t, nil)
	if m := raw.(*rawFS); m.t.reads != nil {
		t.Fatal("reads recorded without WithReadRanges")
	}
}

// BenchmarkReadSet is what recording adds to each FUSE read of a large
// file: a binary search over its chunks and an atomic load per chunk (the
// bit set once). A FUSE read costs tens of microseconds (two context
// switches and a copy of up to 128 KiB), against which this is noise.
func BenchmarkReadSet(b *testing.B) {
	m := readsLayer(b)
	s := m.raw.t.reads
	var id index.ID
	for i := range index.ID(m.raw.t.idx.Len()) {
		if len(m.raw.t.idx.Chunks(i)) == 32 {
			id = i
		}
	}
	b.ResetTimer()
	for i := range b.N {
		s.read(id, int64(i%16)*(128<<10), 128<<10)
	}
}
