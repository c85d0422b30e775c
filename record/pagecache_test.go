package record

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/prefetchlist"
	"golang.org/x/sys/unix"
)

func TestResidentRanges(t *testing.T) {
	const ps = 4096
	for _, tc := range []struct {
		name string
		vec  []byte
		size int64
		want []prefetchlist.Range
	}{
		{"none", []byte{0, 0, 0}, 3 * ps, nil},
		{"all, last page partial", []byte{1, 1, 1}, 2*ps + 10, []prefetchlist.Range{{Start: 0, End: 2*ps + 10}}},
		{"runs joined", []byte{1, 1, 0, 0, 1, 0, 1, 1}, 8 * ps,
			[]prefetchlist.Range{{Start: 0, End: 2 * ps}, {Start: 4 * ps, End: 5 * ps}, {Start: 6 * ps, End: 8 * ps}}},
		// mincore's other bits are reserved: only the low one means resident.
		{"low bit only", []byte{2, 3, 0xfe}, 3 * ps, []prefetchlist.Range{{Start: ps, End: 2 * ps}}},
		{"last page only", []byte{0, 0, 1}, 2*ps + 1, []prefetchlist.Range{{Start: 2 * ps, End: 2*ps + 1}}},
	} {
		if got := residentRanges(tc.vec, ps, tc.size); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// requireDroppablePageCache skips where the tests' work dir is on tmpfs:
// its pages are the files themselves and cannot be dropped, so no ranges
// are ever recorded there (by design, not a failure).
func requireDroppablePageCache(t *testing.T) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(os.TempDir(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC {
		t.Skipf("%s is on tmpfs or ramfs, whose pages cannot be dropped: no ranges can be recorded there", os.TempDir())
	}
}

// covered returns how many bytes of rs overlap [start, end).
func covered(rs []prefetchlist.Range, start, end int64) int64 {
	var n int64
	for _, r := range rs {
		if s, e := max(r.Start, start), min(r.End, end); e > s {
			n += e - s
		}
	}
	return n
}

func total(rs []prefetchlist.Range) int64 { return covered(rs, 0, 1<<62) }

// TestOverlayReadsFillLowerPageCache checks what recording ranges rests on:
// reads and mmap faults through the overlay of a file it has not copied up
// fill the lower file's page cache, and only the parts read.
func TestOverlayReadsFillLowerPageCache(t *testing.T) {
	testenv.RequireRoot(t)
	requireDroppablePageCache(t)
	const big = 8 << 20
	img, err := mutate.AppendLayers(empty.Image, tarLayer(t,
		entry{name: "big", body: strings.Repeat("b", big)},
		entry{name: "copied", body: strings.Repeat("c", 2<<20)},
		entry{name: "small", body: strings.Repeat("s", prefetchlist.RangedMinSize-1)}))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := newSandbox(context.Background(), img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := sb.close(); err != nil {
			t.Error(err)
		}
	}()
	logger := slog.New(slog.DiscardHandler)
	pr := dropLargeFiles(sb.lower, logger)
	if want := map[string]int64{"/big": big, "/copied": 2 << 20}; !reflect.DeepEqual(pr.files, want) {
		t.Fatalf("tracked %v, want %v (large files only, their pages gone)", pr.files, want)
	}

	f, err := os.Open(filepath.Join(sb.merged, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 64<<10), 3<<20); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, big, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	// No read-around, whose size is the device's read-ahead (8 MiB on
	// some VMs): the fault alone must land in the lower file's cache.
	if err := unix.Madvise(m, unix.MADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	if m[6<<20] != 'b' {
		t.Fatal("mapped byte is wrong")
	}
	// Writing copies the file up (reading all of the lower file).
	if err := os.WriteFile(filepath.Join(sb.merged, "copied"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}

	got := pr.ranges([]string{"/big", "/copied", "/small"}, sb.upper, logger)
	rs := got["/big"]
	if covered(rs, 3<<20, 3<<20+64<<10) != 64<<10 || covered(rs, 6<<20, 6<<20+1) != 1 {
		t.Errorf("/big ranges %v miss the read at 3 MiB or the mapped page at 6 MiB", rs)
	}
	// Read-ahead widens a read a little, never to the file.
	if n := total(rs); n > 2<<20 {
		t.Errorf("/big ranges %v cover %d bytes of %d, for 68 KiB read", rs, n, big)
	}
	if len(got) != 1 {
		t.Errorf("ranges %v, want only /big's (copied up /copied, /small below the threshold)", got)
	}
}

// TestRunRecordsReadRanges: a real workload's partial reads of a large file
// come out as ranges, a large file read whole as one range, and neither a
// small file nor a file the workload wrote gets any.
func TestRunRecordsReadRanges(t *testing.T) {
	requireDroppablePageCache(t)
	const big, medium = 8 << 20, 2 << 20
	app := tarLayer(t,
		entry{name: "app/"},
		entry{name: "app/start.sh", mode: 0o755, body: `#!/bin/sh
dd if=/data/big of=/dev/null bs=65536 count=1
dd if=/data/big of=/dev/null bs=65536 skip=48 count=1
cat /data/medium /data/small >/dev/null
echo x >>/data/written
echo READY
sleep 1000
`},
		entry{name: "data/"},
		entry{name: "data/big", body: strings.Repeat("b", big)},
		entry{name: "data/medium", body: strings.Repeat("m", medium)},
		entry{name: "data/small", body: strings.Repeat("s", 512<<10)},
		entry{name: "data/written", body: strings.Repeat("w", 2<<20)},
	)
	img := appImage(t, app)

	res, out := record(t, img, WithWaitLine("READY"), WithTimeout(5*time.Minute))
	if res.Reason != StopReady {
		t.Fatalf("stopped by %q, want ready; output:\n%s", res.Reason, out)
	}
	for _, p := range []string{"/data/big", "/data/medium", "/data/small", "/data/written"} {
		if indexOf(res.Trace.Paths, p) < 0 {
			t.Fatalf("trace %q lacks %s", res.Trace.Paths, p)
		}
	}
	rs := res.Trace.Ranges["/data/big"]
	if covered(rs, 0, 64<<10) != 64<<10 || covered(rs, 3<<20, 3<<20+64<<10) != 64<<10 {
		t.Errorf("/data/big ranges %v miss [0, 64 KiB) or [3 MiB, +64 KiB)", rs)
	}
	// The kernel's read-ahead widens each 64 KiB read (to 256 KiB here).
	if n := total(rs); n > 2<<20 {
		t.Errorf("/data/big ranges %v cover %d bytes of %d, for 128 KiB read", rs, n, big)
	}
	if want := []prefetchlist.Range{{Start: 0, End: medium}}; !reflect.DeepEqual(res.Trace.Ranges["/data/medium"], want) {
		t.Errorf("/data/medium ranges %v, want the whole file %v", res.Trace.Ranges["/data/medium"], want)
	}
	// Below the threshold; copied up (which read it all).
	for _, p := range []string{"/data/small", "/data/written"} {
		if rs, ok := res.Trace.Ranges[p]; ok {
			t.Errorf("%s has ranges %v, want none", p, rs)
		}
	}

	off, _ := record(t, img, WithWaitLine("READY"), WithTimeout(5*time.Minute), WithReadRanges(false))
	if off.Trace.Ranges != nil || indexOf(off.Trace.Paths, "/data/big") < 0 {
		t.Errorf("WithReadRanges(false) recorded %q with ranges %v, want no ranges", off.Trace.Paths, off.Trace.Ranges)
	}
}

// TestDropOnTmpfsRecordsNoRanges: on tmpfs the pages are the file and stay,
// so its large files are not tracked, and are listed whole.
func TestDropOnTmpfsRecordsNoRanges(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if pr := dropLargeFiles(dir, slog.New(slog.DiscardHandler)); len(pr.files) != 0 {
		t.Errorf("tracked %v on tmpfs, want nothing", pr.files)
	}
}
