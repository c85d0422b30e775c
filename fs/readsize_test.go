package fs_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"golang.org/x/sys/unix"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestReadRequestsStayLarge reads a cached file through FUSE (no
// passthrough, page cache dropped) and counts the READ requests that reach
// the layer: each is one cache hit. The mount shrinks go-fuse's request
// buffers, which go-fuse would also apply to the READ size; reads of 4 KiB
// instead of 128 KiB would cost 32 times the requests.
func TestReadRequestsStayLarge(t *testing.T) {
	testenv.RequireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root") // the small buffers are used by direct mounts only
	}
	reg := testenv.StartRegistry(t)
	big := reg0("data", 4<<20, 9)
	l := buildLayer(t, []tentry{big}, estargz.WithChunkSize(1<<20))
	push(t, reg.Host, "rs/app:v1", l)
	f := newFS(t, lfs.WithPassthrough(false), lfs.WithBackgroundFetch(false))
	mp := mount(t, f, reg.Host+"/rs/app:v1", l)
	path := filepath.Join(mp, "data")
	want := expected(t, big, 0, big.size)
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("first read: %v (content equal: %v)", err, bytes.Equal(got, want))
	}

	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := unix.Fadvise(int(fh.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	before := statusOf(t, f, mp).CacheHits
	got, err := io.ReadAll(io.NewSectionReader(fh, 0, big.size))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("second read: %v (content equal: %v)", err, bytes.Equal(got, want))
	}
	// 128 KiB reads take 32 requests; allow for a few short ones.
	if n, most := statusOf(t, f, mp).CacheHits-before, big.size/(64<<10); n == 0 || n > most {
		t.Fatalf("reading %d bytes took %d READ requests; want 1 to %d (READs of at least 64 KiB on average)",
			big.size, n, most)
	}
}
