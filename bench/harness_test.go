package bench

import (
	"image"
	_ "image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// tinyWorkloads exercise both ready signals: a stdout line, and a probe.
func tinyWorkloads() []Workload {
	return []Workload{
		{Name: "line", Build: buildTiny, Ready: ReadySignal{Line: "quick brown fox"},
			Cmd: []string{"/bin/cat", "/data/small/file000", "/data/ready/file000"}},
		{Name: "probe", Build: buildTiny, Ready: ReadySignal{Probe: []string{"/p2/busybox", "test", "-e", "/tmp/up"}},
			RecordLine: "started",
			Cmd: []string{"/bin/sh", "-c",
				"read -r x </data/small/file000; echo started; echo >/tmp/up; exec /p1/busybox sleep 600"}},
	}
}

// TestHarness runs every mode once on a tiny image, then checks the
// measures, the files written, and that teardown left nothing behind.
func TestHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containerd and lazysnap per case")
	}
	testenv.RequireFUSE(t)
	requireBinaries(t)
	out, cache, logs := t.TempDir(), t.TempDir(), t.TempDir()
	s, err := New(WithWorkloads(tinyWorkloads()...), WithReps(1), WithRate(1_000_000_000),
		WithDelay(2*time.Millisecond), WithSettle(500*time.Millisecond, 20*time.Second), WithCacheDir(cache),
		WithRequestLog(true), WithLogDir(logs))
	if err != nil {
		t.Fatal(err)
	}
	var rep *Report
	t.Run("run", func(t *testing.T) {
		rep = s.Run(t.Context(), t, testRunner(t))
	})
	if t.Failed() {
		return
	}
	checkResults(t, rep)
	checkRecorded(t, cache, "/data/small/file000", "/data/big/")
	checkFiles(t, rep, out)
	checkLogsKept(t, rep, logs)
	left, err := s.Footprint().Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("teardown left %v", left)
	}
}

// checkLogsKept: every lazysnap case left serve's and fused's logs under
// its name (WithLogDir), and so did the node that recorded a trace.
func checkLogsKept(t *testing.T, rep *Report, dir string) {
	t.Helper()
	var cases []string
	for _, r := range rep.Results {
		if r.Mode.usesLazysnap() {
			cases = append(cases, benchCase{workload: Workload{Name: r.Workload}, mode: r.Mode, rep: r.Rep - 1}.name())
		}
		if r.Mode == Traced {
			cases = append(cases, r.Workload+"/trace-recording")
		}
	}
	if len(cases) == 0 {
		t.Fatal("no lazysnap case ran")
	}
	for _, c := range cases {
		for _, name := range []string{"lazysnap.log", "fused.log"} {
			if st, err := os.Stat(filepath.Join(dir, c, name)); err != nil || st.Size() == 0 {
				t.Errorf("%s: %s not kept (%v)", c, name, err)
			}
		}
	}
}

func checkResults(t *testing.T, rep *Report) {
	t.Helper()
	if want := len(tinyWorkloads()) * len(DefaultModes()); len(rep.Results) != want {
		t.Fatalf("%d results; want %d (every workload in every mode)", len(rep.Results), want)
	}
	for _, r := range rep.Results {
		if r.ReadySeconds <= 0 || r.BytesAtReady <= 0 || r.RequestsAtReady <= 0 || r.BytesTotal < r.BytesAtReady {
			t.Errorf("%s/%s: implausible result %+v", r.Workload, r.Mode, r)
		}
		checkRequestLog(t, r)
	}
	for _, w := range tinyWorkloads() {
		full, _ := rep.find(w.Name, Overlayfs)
		for _, m := range []Mode{Lazy, Optimized, Traced, ZstdChunked} {
			lazy, _ := rep.find(w.Name, m)
			if lazy.MBAtReady.Median >= full.MBAtReady.Median {
				t.Errorf("%s/%s fetched %.2f MB before ready; overlayfs %.2f MB: want less",
					w.Name, m, lazy.MBAtReady.Median, full.MBAtReady.Median)
			}
		}
	}
}

// checkRequestLog checks that r lists every blob GET its totals count, in
// arrival order, each ended after it started and within the case's bytes.
func checkRequestLog(t *testing.T, r Result) {
	t.Helper()
	if int64(len(r.Requests)) != r.RequestsTotal {
		t.Errorf("%s/%s: %d requests logged, %d counted", r.Workload, r.Mode, len(r.Requests), r.RequestsTotal)
	}
	var bytes int64
	for i, q := range r.Requests {
		bytes += q.Bytes
		if q.Start < 0 || (q.End != 0 && q.End < q.Start) || len(q.Blob) != 12 ||
			(i > 0 && q.Start < r.Requests[i-1].Start) {
			t.Errorf("%s/%s: request %d implausible: %+v", r.Workload, r.Mode, i, q)
		}
	}
	if bytes > r.BytesTotal {
		t.Errorf("%s/%s: logged requests served %d bytes, more than the %d counted", r.Workload, r.Mode, bytes, r.BytesTotal)
	}
}

// checkRecorded checks the start-up lists kept beside the conversions
// (lazysnap's traces, the stargz optimizer's records), one per workload:
// each names the small file both workloads read (as small) and nothing
// under the 8 MiB they never open (as big); the two recorders spell paths
// differently.
func checkRecorded(t *testing.T, cache, small, big string) {
	t.Helper()
	lists, err := filepath.Glob(filepath.Join(cache, "*.trace.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lists) != len(tinyWorkloads()) {
		t.Fatalf("%d lists kept in the cache (%q); want one per workload", len(lists), lists)
	}
	for _, p := range lists {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(b); !strings.Contains(got, small) || strings.Contains(got, big) {
			t.Errorf("list %s:\n%s\nwant %s and nothing under %s", p, got, small, big)
		}
	}
}

func checkFiles(t *testing.T, rep *Report, dir string) {
	t.Helper()
	if err := rep.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table.String())
	if _, err := os.Stat(filepath.Join(dir, "results.json")); err != nil {
		t.Error(err)
	}
	f, err := os.Open(filepath.Join(dir, "chart.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, format, err := image.Decode(f); err != nil || format != "png" {
		t.Errorf("chart.png: format %q, %v", format, err)
	}
}
