package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/fused"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// memoryImages is how many distinct lazy images BenchmarkDaemonMemory20Images
// mounts; bigImages of them have a 10,000-file layer, the others 1,000.
const (
	memoryImages = 20
	bigImages    = 5
	// memoryLimitMB is the target for both daemons together.
	memoryLimitMB = 150
)

// BenchmarkDaemonMemory20Images pulls 20 distinct eStargz images lazily,
// runs a short container on each (listing every file and reading some),
// then reports the memory of `lazysnap serve` and `lazysnap fused` with
// every layer still mounted, and fails if together they use more than
// memoryLimitMB (Pss: pages shared between them counted once). Run it alone:
//
//	go test -run '^$' -bench BenchmarkDaemonMemory20Images -benchtime 1x ./integration/
func BenchmarkDaemonMemory20Images(b *testing.B) {
	testenv.RequireFUSE(b)
	if !haveLazyBinaries() {
		b.Skip("needs bin/lazysnap and bin/lazyconv: run make build")
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r := measureDaemonMemory(b)
		b.ReportMetric(r.serve.pssMB(), "serve-Pss-MB")
		b.ReportMetric(r.fused.pssMB(), "fused-Pss-MB")
		b.ReportMetric(r.serve.pssMB()+r.fused.pssMB(), "total-Pss-MB")
		b.ReportMetric(float64(r.entries), "TOC-entries")
		b.ReportMetric(r.fused.pssMB()/(float64(r.entries)/1e4), "fused-MB/10k-entries")
		fmt.Printf("%d images, %d layers mounted, %d TOC entries (index %.1f MB)\n",
			memoryImages, r.layers, r.entries, float64(r.indexBytes)/1e6)
		fmt.Printf("serve: %s\nfused: %s\n", r.serve, r.fused)
		if total := r.serve.pssMB() + r.fused.pssMB(); total > memoryLimitMB {
			b.Errorf("serve and fused use %.1f MB (Pss) with %d images mounted; the target is at most %d MB",
				total, memoryImages, memoryLimitMB)
		}
	}
}

// memoryResult is what one measurement found.
type memoryResult struct {
	serve, fused procMemory
	layers       int
	entries      int   // inodes of every mounted layer's index
	indexBytes   int64 // memory fused reports for those indexes
}

// measureDaemonMemory starts the stack, pulls and runs every image, and
// reads both daemons' memory while everything is still mounted.
func measureDaemonMemory(b *testing.B) memoryResult {
	b.Helper()
	_, ls := mountTwentyImages(b)
	r := memoryResult{serve: readProcMemory(b, ls.PID()), fused: readProcMemory(b, fusedPID(b, ls))}
	r.layers, r.entries, r.indexBytes = mountedEntries(b, ls.Root)
	if want := 1 + 2*memoryImages; r.layers != want {
		b.Fatalf("%d layers mounted; want %d (busybox once, two per image)", r.layers, want)
	}
	return r
}

// memoryLayers is image i: busybox (shared by all), 300 random 8 KiB files
// under /appNN, and 1,000 or 10,000 small text files under /libNN in
// directories of 100.
func memoryLayers(i int) []testenv.LayerSpec {
	app := testenv.GeneratedFiles(fmt.Sprintf("/app%02d", i), 300, 8<<10, testenv.Random)
	dirs := 10
	if i < bigImages {
		dirs = 100
	}
	var lib []testenv.FileSpec
	for d := 0; d < dirs; d++ {
		lib = append(lib, testenv.GeneratedFiles(fmt.Sprintf("/lib%02d/d%02d", i, d), 100, 200, testenv.Compressible)...)
	}
	return []testenv.LayerSpec{testenv.BusyboxLayer(), {Files: app}, {Files: lib}}
}

// buildMemoryImage builds, pushes and converts image i; it returns the
// eStargz reference.
func buildMemoryImage(b *testing.B, reg *testenv.Registry, i int) string {
	b.Helper()
	img := testenv.BuildImage(b, reg, fmt.Sprintf("mem%02d:gzip", i), memoryLayers(i)...)
	dst := reg.Ref(fmt.Sprintf("mem%02d:esgz", i))
	runBinary(b, testenv.LazyconvBin(), "convert", "--plain-http", img.Ref, dst)
	return dst
}

// runMemoryWorkload lists every file of image i's own layers (every TOC
// entry is looked up) and reads all of /appNN and one /libNN directory, and
// checks what it printed.
func runMemoryWorkload(b *testing.B, cd *testenv.Containerd, ref string, i int) {
	b.Helper()
	// Errors of cat follow the byte count, so a failed read shows in the
	// failure message.
	script := fmt.Sprintf("find /app%02d /lib%02d -type f | wc -l; cat /app%02d/* /lib%02d/d00/* 2>/tmp/err | wc -c; cat /tmp/err", i, i, i, i)
	out := cd.MustCtr(b, cd.RunArgs("lazysnap", ref, fmt.Sprintf("mem%02d", i), "/bin/sh", "-c", script)...)
	libFiles := 1000
	if i < bigImages {
		libFiles = 10000
	}
	want := fmt.Sprintf("%d\n%d\n", 300+libFiles, 300*(8<<10)+100*200)
	if strings.Join(strings.Fields(out), "\n")+"\n" != want {
		b.Fatalf("workload on image %d printed %q; want %q", i, out, want)
	}
}

// fusedPID finds the `lazysnap fused` process serve started for ls, the way
// the harness's cleanup does: by its --root argument.
func fusedPID(b *testing.B, ls *testenv.Lazysnap) int {
	b.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) > 1 && args[1] == "fused" && argValue(args, "--root") == ls.Root {
			return pid
		}
	}
	b.Fatalf("no `lazysnap fused --root %s` process", ls.Root)
	return 0
}

func argValue(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

// procMemory is a process's memory in kB, as /proc reports it.
type procMemory struct {
	pid                       int
	rssKB, hwmKB, pssKB, anon int64
}

func (m procMemory) pssMB() float64 { return float64(m.pssKB) / 1024 }

func (m procMemory) String() string {
	return fmt.Sprintf("pid %d: Pss %.1f MB (anon %.1f MB), VmRSS %.1f MB, peak VmHWM %.1f MB",
		m.pid, m.pssMB(), float64(m.anon)/1024, float64(m.rssKB)/1024, float64(m.hwmKB)/1024)
}

// readProcMemory reads VmRSS and VmHWM from /proc/PID/status and Pss (a
// shared page counts divided among its users; the binary's text is shared
// by serve and fused) from /proc/PID/smaps_rollup.
func readProcMemory(b *testing.B, pid int) procMemory {
	b.Helper()
	m := procMemory{pid: pid}
	status := readKBFields(b, fmt.Sprintf("/proc/%d/status", pid))
	rollup := readKBFields(b, fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	m.rssKB, m.hwmKB = status["VmRSS"], status["VmHWM"]
	m.pssKB, m.anon = rollup["Pss"], rollup["Pss_Anon"]
	if m.rssKB == 0 || m.pssKB == 0 {
		b.Fatalf("pid %d: no VmRSS or Pss in /proc (status %v, rollup %v)", pid, status, rollup)
	}
	return m
}

// readKBFields parses "Name:   123 kB" lines.
func readKBFields(b *testing.B, path string) map[string]int64 {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(rest)
		if !ok || len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		if v, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
			out[name] = v
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatalf("reading %s: %v", path, err)
	}
	return out
}

// mountedEntries asks fused (GET /stats on ROOT/fused.sock) how many layers
// it has mounted, and the inodes and index memory of all of them.
func mountedEntries(b *testing.B, root string) (layers, entries int, indexBytes int64) {
	b.Helper()
	raw, err := fused.NewClient(filepath.Join(root, "fused.sock")).Stats(context.Background())
	if err != nil {
		b.Fatalf("fused stats: %v", err)
	}
	var stats []struct { // fs.LayerStatus, one per mounted layer
		IndexInodeCount int
		IndexBytes      int64
	}
	if err := json.Unmarshal(raw, &stats); err != nil {
		b.Fatalf("decoding fused stats: %v", err)
	}
	for _, s := range stats {
		entries += s.IndexInodeCount
		indexBytes += s.IndexBytes
	}
	if entries == 0 {
		b.Fatalf("fused stats report no index inodes (binary older than the IndexInodeCount stat?): %s", raw)
	}
	return len(stats), entries, indexBytes
}
