package integration

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestSharedTraceFromRegistry: node A runs an image converted without a
// prefetch list, records the files its workload opens first and pushes
// that trace to the image's repository (`lazysnap trace export --push`). A
// fresh node B (its own containerd, root and cache) pulls the same image
// and, at mount, prefetches the traced files it learnt from the registry:
// they are in its cache before anything reads them, and the workload's
// reads of them send no request.
func TestSharedTraceFromRegistry(t *testing.T) {
	a := startLazyEnv(t)
	img := testenv.BuildImage(t, a.reg, "shared:gzip", prefetchLayers()...)
	dst := a.convert(t, img, "shared:lazy")
	refA := testenv.RefVia(dst, a.proxy.Host)
	a.lazysnapPull(t, refA)
	want := sumLines(t, img, workloadFiles()) + "READY\n"
	if out := a.run(t, refA, "shared-a", "/bin/sh", "-c", workloadScript()); out != want {
		t.Fatalf("node A: workload output\n got: %s\nwant: %s", out, want)
	}
	a.cd.MustCtr(t, "image", "rm", "--sync", refA) // saves the trace
	exportTrace(t, a.ls, refA, filepath.Join(t.TempDir(), "trace.txt"), workloadFiles())
	pushed := runBinary(t, testenv.LazysnapBin(), "trace", "export", "--push", "--plain-http", "--root", a.ls.Root, refA)
	t.Logf("node A pushed its trace as %s", strings.TrimSpace(pushed))

	// Node B: no background fetch and no diff_id stream, so that what is
	// in its cache before the workload runs came by the prefetch alone.
	b := &lazyEnv{reg: a.reg, proxy: testenv.StartCountingProxy(t, a.reg.Host),
		extraConfig: "[background_fetch]\nenable = false\n[verify]\ndiff_id = false\n"}
	b.start(t)
	refB := testenv.RefVia(dst, b.proxy.Host)
	b.lazysnapPull(t, refB)
	layouts := readLayouts(t, dst)
	st := waitPrefetched(t, b, refB, len(layouts))
	for i, l := range layouts[1:] { // the data layers: the workload reads from each
		var traced int64
		for _, f := range workloadFiles() {
			if _, ok := l.files[f]; ok {
				traced += img.Sizes[f]
			}
		}
		t.Logf("node B, layer %d: %d bytes in the cache after the prefetch, %d of traced files", i+1, st[l.digest].BytesPresent, traced)
		if st[l.digest].BytesPresent < traced {
			t.Errorf("node B, layer %d: %d bytes prefetched, want at least the %d of the traced files", i+1, st[l.digest].BytesPresent, traced)
		}
	}

	b.proxy.Reset()
	if out := b.run(t, refB, "shared-b", "/bin/sh", "-c", workloadScript()); out != want {
		t.Fatalf("node B: workload output\n got: %s\nwant: %s", out, want)
	}
	for _, q := range rangeRequests(b.proxy) {
		for _, l := range layouts {
			for _, f := range workloadFiles() {
				if q.blob == l.digest && overlapsAny(q.r, l.files[f]) {
					t.Errorf("node B fetched %s (%s %v) when the workload read it: the shared trace did not prefetch it", f, l.digest, q.r)
				}
			}
		}
	}
}
