package integration

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// startupResult is one row of the startup table.
type startupResult struct {
	snapshotter string
	pull        time.Duration // pull start to pull done
	ready       time.Duration // pull start to the container's first output line
	blobBytes   int64         // blob bytes the registry served until then
}

// BenchmarkStartup measures, over a shaped link (200 Mbit/s, 20 ms per
// request), the time from pull start to a 300 MiB image's workload printing
// its line, with overlayfs (full pull) and lazysnap (eStargz, lazy), and the
// registry bytes each needed. Run it alone:
//
//	go test -run '^$' -bench BenchmarkStartup -benchtime 1x ./integration/
func BenchmarkStartup(b *testing.B) {
	testenv.RequireRoot(b)
	env := newStartupEnv(b)
	var results []startupResult
	for _, sn := range []string{"overlayfs", "lazysnap"} {
		b.Run(sn, func(b *testing.B) {
			if sn == "lazysnap" && env.lazyRef == "" {
				b.Skip("needs bin/lazysnap and bin/lazyconv: run make build")
			}
			for i := 0; i < b.N; i++ {
				r := env.measure(b, sn)
				b.ReportMetric(r.ready.Seconds(), "s-to-ready")
				b.ReportMetric(float64(r.blobBytes)/1e6, "MB-fetched")
				results = append(results, r)
			}
		})
	}
	printStartupTable(env, results)
}

// startupEnv holds the shaped registry with the image in both formats, and
// a counting proxy in front of its latency proxy.
type startupEnv struct {
	shaped            *testenv.ShapedRegistry
	proxy             *testenv.CountingProxy
	img               *testenv.Image
	plainRef, lazyRef string // pull refs through the counting proxy
}

// newStartupEnv builds and converts the image with the link unshaped (that
// is set-up, not what is measured), then shapes it.
func newStartupEnv(b *testing.B) *startupEnv {
	b.Helper()
	s := testenv.StartShapedRegistry(b)
	if err := s.Unshape(); err != nil {
		b.Fatal(err)
	}
	e := &startupEnv{shaped: s, proxy: testenv.StartCountingProxy(b, s.Host)}
	e.img = testenv.BuildImage(b, s.Direct, "startup:gzip", largeImageLayers()...)
	e.plainRef = testenv.RefVia(e.img.Ref, e.proxy.Host)
	if haveLazyBinaries() {
		lazy := s.Direct.Ref("startup:esgz")
		runBinary(b, testenv.LazyconvBin(), "convert", "--plain-http", e.img.Ref, lazy)
		e.lazyRef = testenv.RefVia(lazy, e.proxy.Host)
	}
	if err := s.Shape(); err != nil {
		b.Fatal(err)
	}
	return e
}

// measure starts a fresh containerd (and lazysnap), then times the pull and
// the run of a workload reading one 10 MiB file.
func (e *startupEnv) measure(b *testing.B, snapshotter string) startupResult {
	b.StopTimer()
	ref := e.plainRef
	opts := []testenv.ContainerdOption{testenv.WithRegistryHost(e.proxy.Host)}
	if snapshotter == "lazysnap" {
		ref = e.lazyRef
		opts = append(opts, testenv.WithLazysnap())
	}
	cd := testenv.StartContainerd(b, opts...)
	if snapshotter == "lazysnap" {
		testenv.StartLazysnap(b, cd, testenv.WithLazysnapConfig(lazysnapConfig(cd)))
	}
	e.proxy.Reset()
	b.StartTimer()

	start := time.Now()
	runBinary(b, testenv.LazysnapBin(), "pull", "--address", cd.Address, "--namespace", cd.Namespace,
		"--hosts-dir", cd.HostsDir, "--snapshotter", snapshotter, "--plain-http", ref)
	r := startupResult{snapshotter: snapshotter, pull: time.Since(start)}
	line := firstOutputLine(b, cd, snapshotter, ref)
	r.ready, r.blobBytes = time.Since(start), e.proxy.BlobBytes()
	b.StopTimer()

	if want := e.img.Files["/data/l2/file005"] + "  /data/l2/file005"; line != want {
		b.Fatalf("workload printed %q; want %q", line, want)
	}
	return r
}

// firstOutputLine runs the workload and returns its first stdout line as
// soon as it is printed.
func firstOutputLine(b *testing.B, cd *testenv.Containerd, snapshotter, ref string) string {
	b.Helper()
	cmd := cd.CtrCommand(b.Context(), cd.RunArgs(snapshotter, ref, "startup", "sha256sum", "/data/l2/file005")...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	line, readErr := bufio.NewReader(stdout).ReadString('\n')
	if err := cmd.Wait(); err != nil || readErr != nil {
		b.Fatalf("workload: %v %v", err, readErr)
	}
	return strings.TrimSuffix(line, "\n")
}

func haveLazyBinaries() bool {
	for _, bin := range []string{testenv.LazysnapBin(), testenv.LazyconvBin()} {
		if _, err := os.Stat(bin); err != nil {
			return false
		}
	}
	return true
}

func printStartupTable(e *startupEnv, results []startupResult) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "image: %d MB of files, %d MB compressed; link %d Mbit/s, %s per request\n",
		e.img.FileBytes/1e6, e.img.CompressedSize/1e6, e.shaped.RateBits/1e6, e.shaped.Delay)
	fmt.Fprintln(w, "snapshotter\tpull (s)\tto ready (s)\tfetched (MB)\t")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%.2f\t%.2f\t%.1f\t\n", r.snapshotter, r.pull.Seconds(), r.ready.Seconds(), float64(r.blobBytes)/1e6)
	}
	w.Flush()
}
