package fs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sys/unix"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/sharedtrace"
	"github.com/lazysnap/lazysnap/fs/trace"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

const rangesChunk = 512 << 10

// startupReads reads what a JVM-like start-up reads of a large file: its
// head, a page in the middle, and a page mapped and touched (an mmap page
// fault arrives as a FUSE read too), checking the bytes.
func startupReads(t *testing.T, mp string, e tentry) {
	t.Helper()
	f, err := os.Open(filepath.Join(mp, e.name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range [][2]int64{{0, 64 << 10}, {10 << 20, 4 << 10}} {
		preadCheck(t, f, e, r[0], r[1])
	}
	const mapAt = 12 << 20
	if got, want := mappedPage(t, filepath.Join(mp, e.name), mapAt), sha256.Sum256(expected(t, e, mapAt, 4096)); got != hex.EncodeToString(want[:]) {
		t.Fatalf("%s: mapped page at %d differs", e.name, mapAt)
	}
}

const envMmapFile = "LAZYSNAP_TEST_MMAP_FILE"

// mappedPage returns the sha256 of the page at off of the file at path,
// mapped and touched in another process: a page fault of this process on
// a mount it serves would wait for the FUSE server while the Go runtime
// waits (to stop the world) for the faulting thread.
func mappedPage(t *testing.T, path string, off int64) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMmapHelperProcess$")
	cmd.Env = append(os.Environ(), envMmapFile+"="+path+"@"+strconv.FormatInt(off, 10))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mapping %s: %v", path, err)
	}
	sum, _, _ := strings.Cut(string(out), "\n") // the test binary says PASS next
	return sum
}

// TestMmapHelperProcess is the process mappedPage runs: it maps a page,
// touches it and prints its sha256.
func TestMmapHelperProcess(t *testing.T) {
	path, offText, ok := strings.Cut(os.Getenv(envMmapFile), "@")
	if !ok {
		t.Skip("helper process of TestTracePrefetchReadRanges")
	}
	off, err := strconv.ParseInt(offText, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), off, 4096, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	sum := sha256.Sum256(m)
	fmt.Println(hex.EncodeToString(sum[:]))
}

func preadCheck(t *testing.T, f *os.File, e tentry, off, n int64) {
	t.Helper()
	got := make([]byte, n)
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, expected(t, e, off, n)) {
		t.Fatalf("%s: %d bytes at %d differ", e.name, n, off)
	}
}

func covers(rs []prefetchlist.Range, off int64) bool {
	return slices.ContainsFunc(rs, func(r prefetchlist.Range) bool { return r.Start <= off && off < r.End })
}

func rangesBytes(rs []prefetchlist.Range) (n int64) {
	for _, r := range rs {
		n += r.End - r.Start
	}
	return n
}

func requestBytes(rs []blobRange) (n int64) {
	for _, r := range rs {
		n += r.len()
	}
	return n
}

// TestTracePrefetchReadRanges: a start-up that reads only parts of a large
// file records those parts (chunk by chunk) in the trace; the next cold
// start prefetches only them, so the registry serves about the bytes read
// rather than the whole file, and the start-up's reads send no request.
// The file's other bytes are fetched when read, correctly, and a later run
// adds the parts it read to the trace (the union).
func TestTracePrefetchReadRanges(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	java, modules := reg("bin/java", 20<<10, 1), reg("lib/modules", 16<<20, 2)
	l := buildLayer(t, []tentry{java, modules, reg("lib/other", 2<<20, 3)}, estargz.WithChunkSize(rangesChunk))
	push(t, registry.Host, "trace/jvm:v1", l)
	ref := proxy.Host + "/trace/jvm:v1"
	traces := t.TempDir()
	opts := []lfs.Option{lfs.WithTraceDir(traces), lfs.WithPrefetch(true)}

	first := newFS(t, opts...)
	mp := mount(t, first, ref, l)
	checkFile(t, mp, java)
	startupReads(t, mp, modules)
	if err := first.Close(); err != nil { // unmounting saves the trace
		t.Fatal(err)
	}
	saved, err := trace.Dir(traces).Load(ref)
	if err != nil {
		t.Fatal(err)
	}
	rs := saved.Ranges["/lib/modules"]
	for _, off := range []int64{0, 64<<10 - 1, 10 << 20, 12 << 20} {
		if !covers(rs, off) {
			t.Errorf("the trace's ranges %v miss offset %d, which was read", rs, off)
		}
	}
	if n := rangesBytes(rs); n > 6<<20 || rs[0].Start%rangesChunk != 0 {
		t.Errorf("the trace's ranges %v (%d bytes) are not the few chunks read of the 16 MiB file", rs, n)
	}
	if _, ok := saved.Ranges["/bin/java"]; ok || len(saved.Ranges) != 1 {
		t.Errorf("ranges %v: want only the large file's", saved.Ranges)
	}

	// A cold start: the prefetch takes the ranges, not the whole file.
	next := newFS(t, opts...)
	before := len(proxy.Requests())
	mp = mount(t, next, ref, l)
	waitFor(t, "the prefetch", func() bool { return statusOf(t, next, mp).PrefetchDone })
	prefetched := len(proxy.Requests())
	// The mount's footer and TOC, bin/java, the ranges (random bytes
	// compress to a little more than their size) and gaps read through.
	got, want := requestBytes(proxy.Requests()[before:]), rangesBytes(rs)
	t.Logf("ranges recorded %v; mount and prefetch fetched %d bytes for %d bytes of ranges", rs, got, want)
	if got < want || got > want+1<<20 {
		t.Errorf("mount and prefetch fetched %d bytes; want the %d bytes of the ranges and little more (not the 16 MiB file)", got, want)
	}
	checkFile(t, mp, java)
	startupReads(t, mp, modules)
	if n := len(proxy.Requests()) - prefetched; n != 0 {
		t.Errorf("the start-up's reads after the prefetch sent %d requests, want 0", n)
	}
	f, err := os.Open(filepath.Join(mp, modules.name))
	if err != nil {
		t.Fatal(err)
	}
	preadCheck(t, f, modules, 14<<20, 4096) // a part never read before: fetched now
	f.Close()
	if n := len(proxy.Requests()) - prefetched; n == 0 {
		t.Error("reading a part outside the ranges sent no request")
	}
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
	resumed, err := trace.Dir(traces).Load(ref)
	if err != nil {
		t.Fatal(err)
	}
	union := resumed.Ranges["/lib/modules"]
	if !covers(union, 14<<20) || !slices.Equal(prefetchlist.Normalize(append(slices.Clone(union), rs...)), union) {
		t.Errorf("the trace after a second run has ranges %v; want those of the first, %v, and 14 MiB", union, rs)
	}

	// Every other byte of the partly prefetched file reads correctly.
	third := newFS(t, opts...)
	mp = mount(t, third, ref, l)
	if n := requestsAfterPrefetch(t, third, mp, proxy, modules); n == 0 {
		t.Error("reading the whole file after a ranged prefetch sent no request")
	}
}

// TestSharedTraceRanges: a trace shared through the registry brings its
// ranges too (trace.Read), so a fresh node prefetches only the parts of a
// large file that the node which pushed it read.
func TestSharedTraceRanges(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	modules := reg("lib/modules", 8<<20, 4)
	l := buildLayer(t, []tentry{modules}, estargz.WithChunkSize(rangesChunk))
	ref := proxy.Host + "/shared/jvm:v1"
	pushed, err := name.ParseReference(push(t, registry.Host, "shared/jvm:v1", l))
	if err != nil {
		t.Fatal(err)
	}
	subj, err := sharedtrace.Subject(pushed, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs := []prefetchlist.Range{{Start: 2 * rangesChunk, End: 3 * rangesChunk}}
	var tr bytes.Buffer
	if err := trace.Write(&tr, ref, []string{"/lib/modules"}, prefetchlist.WithRanges(map[string][]prefetchlist.Range{"/lib/modules": rs})); err != nil {
		t.Fatal(err)
	}
	if _, err := sharedtrace.Push(context.Background(), pushed.Context(), subj, tr.Bytes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	lbls := maps.Clone(labels(ref, l))
	lbls[lfs.LabelManifestDigest] = subj.Digest.String()

	fresh := newFS(t, lfs.WithTraceDir(t.TempDir()), lfs.WithPrefetch(true))
	mp := t.TempDir()
	before := len(proxy.Requests())
	if err := fresh.Mount(context.Background(), mp, lbls); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the prefetch", func() bool { return statusOf(t, fresh, mp).PrefetchDone })
	if got, want := requestBytes(proxy.Requests()[before:]), rangesBytes(rs); got < want || got > want+1<<20 {
		t.Errorf("mount and prefetch fetched %d bytes; want the %d bytes of the shared ranges and little more", got, want)
	}
	prefetched := len(proxy.Requests())
	f, err := os.Open(filepath.Join(mp, modules.name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	preadCheck(t, f, modules, 2*rangesChunk+100, 4096)
	if n := len(proxy.Requests()) - prefetched; n != 0 {
		t.Errorf("reading inside the shared ranges sent %d requests, want 0", n)
	}
}
