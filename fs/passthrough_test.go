package fs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestOpenWhileCachedHandleOpen reproduces a shell that keeps its binary
// open while the binary's cache entry completes, then execs it again: the
// new open must not ask for passthrough, which the kernel refuses (EIO) on
// an inode with handles open in cached I/O mode.
func TestOpenWhileCachedHandleOpen(t *testing.T) {
	testenv.RequireFUSE(t)
	reg := testenv.StartRegistry(t)
	bin := reg0("bin/busybox", 3<<20, 5)
	l := buildLayer(t, []tentry{dir("bin/", 0o755), bin}, estargz.WithChunkSize(1<<20))
	push(t, reg.Host, "pt/app:v1", l)
	mp := mount(t, newFS(t), reg.Host+"/pt/app:v1", l)
	path := filepath.Join(mp, "bin/busybox")
	want := expected(t, bin, 0, bin.size)

	held, err := os.Open(path) // cache empty: a cached-mode handle
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("first full read: %v (content equal: %v)", err, bytes.Equal(got, want))
	}
	// The cache entry is complete now; the held handle is still open.
	for i := range 3 {
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("open %d after the cache completed, with a cached-mode handle open: %v (content equal: %v)",
				i, err, bytes.Equal(got, want))
		}
	}
	held.Close()
	// With no cached-mode handle left, a new open may use passthrough.
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("open after the held handle closed: %v (content equal: %v)", err, bytes.Equal(got, want))
	}
}
