package bench

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// BenchmarkStartup is `make bench`: time from pull start to ready for each
// image in each mode, from a cold node, over the shaped link. Flags follow
// -args (see benchFlags). Ctrl-C cancels the running case; the cleanups
// registered on b then tear everything down.
//
//	go test -run '^$' -bench BenchmarkStartup -benchtime 1x -timeout 60m ./bench/ -args -reps 3
func BenchmarkStartup(b *testing.B) {
	testenv.RequireFUSE(b)
	requireBinaries(b)
	opts, err := flags.options()
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	dir := flags.outDir()
	ctx, stop := signal.NotifyContext(b.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := s.Run(ctx, b, benchRunner(b))
	if err := rep.WriteTable(os.Stdout); err != nil {
		b.Fatal(err)
	}
	if err := rep.WriteFiles(dir); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("results.json and chart.png in %s\n", dir)
}

// benchRunner runs each case as a sub-benchmark, so that its cold node is
// torn down when the case ends. ns/op is the time to ready (not the case's
// set-up), so benchstat reads the output as it is.
func benchRunner(b *testing.B) CaseRunner {
	return func(name string, f func(testing.TB) Result) bool {
		return b.Run(name, func(b *testing.B) {
			r := f(b)
			b.ReportMetric(r.ReadySeconds*1e9, "ns/op")
			b.ReportMetric(float64(r.BytesAtReady)/1e6, "MB-at-ready")
			b.ReportMetric(float64(r.RequestsAtReady), "req-at-ready")
		})
	}
}

// testRunner runs each case as a subtest.
func testRunner(t *testing.T) CaseRunner {
	return func(name string, f func(testing.TB) Result) bool {
		return t.Run(name, func(t *testing.T) { f(t) })
	}
}

// requireBinaries fails rather than skips: `make bench` and `make test`
// build the binaries first.
func requireBinaries(tb testing.TB) {
	tb.Helper()
	for _, bin := range []string{testenv.LazysnapBin(), testenv.LazyconvBin()} {
		if _, err := os.Stat(bin); err != nil {
			tb.Fatalf("%s missing: run make build", bin)
		}
	}
}
