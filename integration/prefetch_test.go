package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/lazysnap/lazysnap/fs/trace"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// prefetchChunk is the chunk size the prefetch tests convert with: small, so
// that a file spanning several chunks keeps the images small.
const prefetchChunk = 1 << 20

// prefetchLayers is busybox and three layers /data/l1..l3, each with small
// random files, a file of 1.5 chunks and small compressible files (which
// estargz may pack into one compressed frame). The workload reads a subset.
func prefetchLayers() []testenv.LayerSpec {
	layers := []testenv.LayerSpec{testenv.BusyboxLayer()}
	for i := 1; i <= 3; i++ {
		dir := fmt.Sprintf("/data/l%d", i)
		files := testenv.GeneratedFiles(dir, 4, 96<<10, testenv.Random)
		files = append(files, testenv.FileSpec{Path: dir + "/big", Size: 3*prefetchChunk/2 + 1234, Content: testenv.Random})
		files = append(files, testenv.GeneratedFiles(dir+"/text", 6, 16<<10, testenv.Compressible)...)
		layers = append(layers, testenv.LayerSpec{Files: files})
	}
	return layers
}

// workloadFiles are the files the workload reads, in order, interleaving the
// layers so that an order kept per layer is visible.
func workloadFiles() []string {
	return []string{"/data/l2/file001", "/data/l1/big", "/data/l3/text/file002", "/data/l1/file003",
		"/data/l2/big", "/data/l3/file000", "/data/l3/text/file004"}
}

// unlistedFile is read only after READY, so it is never prioritized.
const unlistedFile = "/data/l2/file003"

// workloadScript reads workloadFiles in order, then prints READY.
func workloadScript() string {
	return "sha256sum " + strings.Join(workloadFiles(), " ") + " && echo READY"
}

// TestOptimizedPrefetchRequests converts with `lazyconv optimize`, runs the
// workload lazily with background fetch off, and checks at a recording
// proxy that the prioritized regions came in at most (layers touched + 2)
// Range requests and that no prioritized chunk was fetched again on demand.
func TestOptimizedPrefetchRequests(t *testing.T) {
	e := newLazyEnv(t)
	// Background fetch would send requests of its own; only prefetch and
	// reads are to be seen at the proxy.
	e.extraConfig = "[background_fetch]\nenable = false\n"
	rec := testenv.StartCountingProxy(t, e.reg.Host)
	e.start(t, testenv.WithRegistryHost(rec.Host))
	img := testenv.BuildImage(t, e.reg, "prefetch:gzip", prefetchLayers()...)

	dst := e.reg.Ref("prefetch:optimized")
	// --ranges=false: what busybox's exec reads of it depends on the host's
	// read-ahead, and a busybox recorded in part would leave its layer with
	// no prioritized region; the ranges have tests of their own (record,
	// cmd/lazyconv).
	runBinary(t, testenv.LazyconvBin(), "optimize", "--plain-http", "--wait-line", "READY",
		"--runtime", testenv.Tool(t, "runc"), "--chunk-size", strconv.Itoa(prefetchChunk),
		"--ranges=false", "--cmd", workloadScript(), img.Ref, dst)
	layouts := readLayouts(t, dst)
	assertPrioritizedOrder(t, layouts, workloadFiles())

	ref := testenv.RefVia(dst, rec.Host)
	e.lazysnapPull(t, ref)
	out := e.run(t, ref, "prefetch", "/bin/sh", "-c", workloadScript()+" && sha256sum "+unlistedFile)
	want := sumLines(t, img, workloadFiles()) + "READY\n" + sumLines(t, img, []string{unlistedFile})
	if out != want {
		t.Fatalf("workload output\n got: %s\nwant: %s", out, want)
	}
	assertPrefetchRequests(t, rangeRequests(rec), layouts)
	assertFetchedOnDemand(t, rangeRequests(rec), suffixRequests(rec), layouts, unlistedFile)
}

// assertPrefetchRequests checks each layer's split of the requests that
// touched its prioritized chunks.
func assertPrefetchRequests(t *testing.T, reqs []rangeRequest, layouts []layerLayout) {
	t.Helper()
	touched, prefetch := 0, 0
	for i, l := range layouts {
		if len(l.prioritizedChunks()) == 0 {
			continue
		}
		touched++
		s := splitFetches(reqs, l)
		prefetch += s.prefetch
		t.Logf("layer %d %s: %d prioritized files, in by %d requests, %d requests for them after",
			i, l.digest, len(l.prioritized), s.prefetch, s.onDemand)
		if s.missed > 0 {
			t.Errorf("layer %d: %d prioritized chunks never fetched", i, s.missed)
		}
		if s.onDemand > 0 {
			t.Errorf("layer %d: %d requests fetched prioritized chunks again after the prefetch", i, s.onDemand)
		}
	}
	if touched != len(layouts) {
		t.Errorf("%d of %d layers have prioritized chunks; the workload reads from every layer", touched, len(layouts))
	}
	if prefetch > touched+2 {
		t.Errorf("prioritized regions came in %d requests; want at most %d (layers touched + 2)", prefetch, touched+2)
	}
}

// assertFetchedOnDemand checks that the proxy saw the read of a file the
// list does not name, so that "no on-demand request" above is not vacuous.
func assertFetchedOnDemand(t *testing.T, reqs, suffixes []rangeRequest, layouts []layerLayout, file string) {
	t.Helper()
	for _, l := range layouts {
		chunks, ok := l.files[file]
		if !ok {
			continue
		}
		for _, q := range reqs {
			if q.blob == l.digest && overlapsAny(q.r, chunks) {
				return
			}
		}
		// Or the request that resolved the blob at mount brought it: its
		// suffix range (the blob's tail, for the footer and TOC) holds the
		// last files of a small layer. That is no prefetch either.
		for _, q := range suffixes {
			if q.blob == l.digest && overlapsAny(byteRange{max(0, l.size-q.suffix), l.size}, chunks) {
				return
			}
		}
		t.Fatalf("no request fetched %s: the proxy did not see the lazy reads", file)
	}
	t.Fatalf("no layer has %s", file)
}

// TestTraceExportReproducesOrder runs the workload on an unprioritized
// conversion, exports lazysnap's trace, converts again with it, and checks
// that each layer places the workload's files first, in the recorded order.
func TestTraceExportReproducesOrder(t *testing.T) {
	e := startLazyEnv(t)
	img := testenv.BuildImage(t, e.reg, "trace:gzip", prefetchLayers()...)
	ref := testenv.RefVia(e.convert(t, img, "trace:lazy"), e.proxy.Host)
	e.lazysnapPull(t, ref)
	out := e.run(t, ref, "trace", "/bin/sh", "-c", workloadScript())
	if want := sumLines(t, img, workloadFiles()) + "READY\n"; out != want {
		t.Fatalf("workload output\n got: %s\nwant: %s", out, want)
	}
	// fused saves an image's trace when its last layer is unmounted, which
	// removing the image (and so its snapshots) does.
	e.cd.MustCtr(t, "image", "rm", "--sync", ref)

	list := filepath.Join(t.TempDir(), "trace.txt")
	paths := exportTrace(t, e.ls, ref, list, workloadFiles())
	if got := underDir(paths, "/data/"); !slices.Equal(got, workloadFiles()) {
		t.Fatalf("exported trace lists %q under /data; want %q", got, workloadFiles())
	}
	dst := e.reg.Ref("trace:prioritized")
	runBinary(t, testenv.LazyconvBin(), "convert", "--plain-http", "--chunk-size", strconv.Itoa(prefetchChunk),
		"--prioritize", list, img.Ref, dst)
	assertPrioritizedOrder(t, readLayouts(t, dst), workloadFiles())
}

// exportTrace runs `lazysnap trace export` until the list names every path
// of want (the save on unmount may land just after containerd's removal
// returns), bounded, and returns the exported paths.
func exportTrace(t *testing.T, ls *testenv.Lazysnap, ref, out string, want []string) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		paths, err := tryExport(ls, ref, out)
		if err == nil && containsAll(paths, want) {
			return paths
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace of %s never listed %q: last export %q, %v", ref, want, paths, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tryExport(ls *testenv.Lazysnap, ref, out string) ([]string, error) {
	cmd := exec.Command(ls.Bin, "trace", "export", "--root", ls.Root, ref, "-o", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("lazysnap trace export: %w: %s", err, msg)
	}
	f, err := os.Open(out)
	if err != nil {
		return nil, fmt.Errorf("reading the export: %w", err)
	}
	defer f.Close()
	list, err := prefetchlist.Read(f)
	return list.Paths, err
}

// TestPrioritizeBadLists converts with lists that name missing files, that
// are another image's trace, or that are empty: conversion succeeds, the
// result verifies, and only the files the image has are prioritized.
func TestPrioritizeBadLists(t *testing.T) {
	requireLazyBinaries(t)
	reg := testenv.StartRegistry(t)
	img := testenv.BuildImage(t, reg, "badlist:gzip", testenv.BusyboxLayer(),
		testenv.LayerSpec{Files: testenv.GeneratedFiles("/data", 3, 64<<10, testenv.Random)})
	var foreign bytes.Buffer
	if err := trace.Write(&foreign, "127.0.0.1:1/other:1", []string{"/srv/other/app", "/bin/busybox", "/usr/lib/libother.so"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, list string
		want       []string // prioritized regular files over all layers
	}{
		{"missing-files", "/no/such/file\ndata/file001\n/data/file999\n/data/file001/below\n", []string{"/data/file001"}},
		{"foreign-trace", foreign.String(), []string{"/bin/busybox"}},
		{"empty", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			list := filepath.Join(t.TempDir(), "list.txt")
			if err := os.WriteFile(list, []byte(c.list), 0o644); err != nil {
				t.Fatal(err)
			}
			dst := reg.Ref("badlist:" + c.name)
			runBinary(t, testenv.LazyconvBin(), "convert", "--plain-http", "--prioritize", list, img.Ref, dst)
			runBinary(t, testenv.LazyconvBin(), "verify", "--plain-http", dst)
			var got []string
			for _, l := range readLayouts(t, dst) {
				got = append(got, l.prioritized...)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("prioritized files %q; want %q", got, c.want)
			}
		})
	}
}

// assertPrioritizedOrder checks that every layer places, before its
// landmark, exactly the files of want it holds, in the order of want.
func assertPrioritizedOrder(t *testing.T, layouts []layerLayout, want []string) {
	t.Helper()
	for i, l := range layouts {
		var wantHere []string
		for _, p := range want {
			if _, ok := l.files[p]; ok {
				wantHere = append(wantHere, p)
			}
		}
		if got := underDir(l.prioritized, "/data/"); !slices.Equal(got, wantHere) {
			t.Errorf("layer %d places %q under /data before its landmark; want %q", i, got, wantHere)
		}
	}
}

// sumLines is what `sha256sum PATHS...` prints for the generated files.
func sumLines(t *testing.T, img *testenv.Image, paths []string) string {
	t.Helper()
	var b strings.Builder
	for _, p := range paths {
		sum, ok := img.Files[p]
		if !ok {
			t.Fatalf("image has no file %s", p)
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, p)
	}
	return b.String()
}

func underDir(paths []string, dir string) []string {
	var out []string
	for _, p := range paths {
		if strings.HasPrefix(p, dir) {
			out = append(out, p)
		}
	}
	return out
}

func containsAll(paths, want []string) bool {
	for _, w := range want {
		if !slices.Contains(paths, w) {
			return false
		}
	}
	return true
}

// byteRange is the half-open byte range [start, end) of a blob.
type byteRange struct{ start, end int64 }

func (r byteRange) overlaps(o byteRange) bool { return r.start < o.end && o.start < r.end }
func (r byteRange) contains(o byteRange) bool { return r.start <= o.start && o.end <= r.end }

func overlapsAny(r byteRange, rs []byteRange) bool {
	return slices.ContainsFunc(rs, r.overlaps)
}

// layerLayout is what a converted layer's TOC says about where its files
// lie in the blob.
type layerLayout struct {
	digest string
	size   int64 // of the compressed blob
	// prioritized are the regular files before the prefetch landmark, in
	// blob order.
	prioritized []string
	// files maps each regular file with content to the compressed ranges of
	// its chunks.
	files map[string][]byteRange
}

// prioritizedChunks returns the compressed ranges of the prioritized files.
func (l layerLayout) prioritizedChunks() []byteRange {
	var out []byteRange
	for _, p := range l.prioritized {
		out = append(out, l.files[p]...)
	}
	return out
}

// readLayouts reads every layer blob of ref from the registry (directly,
// not through a proxy a test counts) and parses its eStargz TOC.
func readLayouts(t *testing.T, ref string) []layerLayout {
	t.Helper()
	img := remoteImage(t, ref)
	layers, err := img.Layers()
	if err != nil {
		t.Fatalf("layers of %s: %v", ref, err)
	}
	out := make([]layerLayout, len(layers))
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if out[i], err = layoutOfBlob(l.Compressed); err != nil {
			t.Fatalf("layer %d of %s: %v", i, ref, err)
		}
		out[i].digest = d.String()
	}
	return out
}

// layoutOfBlob reads a whole eStargz (gzip) blob and parses its footer and
// TOC. The test images are small, so the blob is held in memory.
func layoutOfBlob(open func() (io.ReadCloser, error)) (l layerLayout, err error) {
	rc, err := open()
	if err != nil {
		return layerLayout{}, fmt.Errorf("fetching blob: %w", err)
	}
	defer rc.Close()
	blob, err := io.ReadAll(rc)
	if err != nil {
		return layerLayout{}, fmt.Errorf("reading blob: %w", err)
	}
	gz := new(estargz.GzipDecompressor)
	defer func() { l.size = int64(len(blob)) }()
	footerAt := int64(len(blob)) - gz.FooterSize()
	if footerAt < 0 {
		return layerLayout{}, errors.New("blob too small for an eStargz footer")
	}
	_, tocOff, _, err := gz.ParseFooter(blob[footerAt:])
	if err != nil {
		return layerLayout{}, fmt.Errorf("parsing footer: %w", err)
	}
	if tocOff < 0 || tocOff > footerAt {
		return layerLayout{}, fmt.Errorf("TOC offset %d outside the blob", tocOff)
	}
	toc, _, err := gz.ParseTOC(bytes.NewReader(blob[tocOff:footerAt]))
	if err != nil {
		return layerLayout{}, fmt.Errorf("parsing TOC: %w", err)
	}
	return layoutOf(toc.Entries, tocOff), nil
}

// layoutOf walks TOC entries in blob order. A chunk's compressed bytes run
// from its offset to the next distinct offset (small files may share one
// frame, with the same offset); the last ones end where the TOC starts.
func layoutOf(entries []*estargz.TOCEntry, tocOff int64) layerLayout {
	ends := nextOffsets(entries, tocOff)
	l := layerLayout{files: map[string][]byteRange{}}
	landmark := false
	for _, e := range entries {
		p := path.Clean("/" + e.Name)
		switch {
		case e.Name == estargz.PrefetchLandmark:
			landmark = true
		case e.Type == "reg" && !landmark:
			l.prioritized = append(l.prioritized, p)
		}
		if e.Offset > 0 && (e.Type == "chunk" || (e.Type == "reg" && e.Size > 0)) && e.Name != estargz.PrefetchLandmark {
			l.files[p] = append(l.files[p], byteRange{e.Offset, ends[e.Offset]})
		}
	}
	if !landmark {
		l.prioritized = nil // no landmark (or the no-prefetch one): nothing comes first
	}
	return l
}

func nextOffsets(entries []*estargz.TOCEntry, tocOff int64) map[int64]int64 {
	offs := []int64{tocOff}
	for _, e := range entries {
		if e.Offset > 0 {
			offs = append(offs, e.Offset)
		}
	}
	slices.Sort(offs)
	offs = slices.Compact(offs)
	next := make(map[int64]int64, len(offs))
	for i := 0; i+1 < len(offs); i++ {
		next[offs[i]] = offs[i+1]
	}
	return next
}

// fetchSplit sorts the requests that touched one layer's prioritized
// chunks. Those that arrive while some prioritized chunk is still uncovered
// are the prefetch (an on-demand read racing it would count here too, and
// so show as extra requests); any later one is an on-demand fetch the
// prefetch should have made unnecessary.
type fetchSplit struct {
	prefetch, onDemand int
	missed             int // prioritized chunks no request covered
}

func splitFetches(reqs []rangeRequest, l layerLayout) fetchSplit {
	chunks := l.prioritizedChunks()
	pending := slices.Clone(chunks)
	var s fetchSplit
	for _, q := range reqs {
		if q.blob != l.digest || !overlapsAny(q.r, chunks) {
			continue
		}
		if len(pending) == 0 {
			s.onDemand++
			continue
		}
		s.prefetch++
		pending = slices.DeleteFunc(pending, q.r.contains)
	}
	s.missed = len(pending)
	return s
}

// rangeRequest is one blob GET with its byte range.
type rangeRequest struct {
	blob   string // digest
	r      byteRange
	suffix int64 // for a suffix range (bytes=-N): N
}

// suffixRequests returns the blob GETs p saw with a suffix range: those that
// resolve a blob at mount (its size and its tail, for the footer and TOC).
func suffixRequests(p *testenv.CountingProxy) []rangeRequest {
	var out []rangeRequest
	for _, g := range p.Gets() {
		var n int64
		if _, err := fmt.Sscanf(g.Range, "bytes=-%d", &n); err == nil {
			out = append(out, rangeRequest{blob: g.Blob, suffix: n})
		}
	}
	return out
}

// rangeRequests returns the blob GETs p saw, with their byte ranges,
// except the suffix GET ("bytes=-N") with which each mount resolves its
// blob and reads its TOC (fs/remote keeps the blob's tail): it is neither
// prefetch nor read, even where the tail reaches into prioritized chunks.
func rangeRequests(p *testenv.CountingProxy) []rangeRequest {
	var out []rangeRequest
	for _, g := range p.Gets() {
		if strings.HasPrefix(g.Range, "bytes=-") {
			continue
		}
		out = append(out, rangeRequest{blob: g.Blob, r: parseRange(g.Range)})
	}
	return out
}

// parseRange reads "bytes=A-B". Anything else (no Range, several ranges, a
// suffix) is taken as the whole blob, which overlaps every chunk: such a
// request can only make the assertions stricter.
func parseRange(h string) byteRange {
	var a, b int64
	if n, err := fmt.Sscanf(h, "bytes=%d-%d", &a, &b); err != nil || n != 2 || strings.Contains(h, ",") || b < a {
		return byteRange{0, math.MaxInt64}
	}
	return byteRange{a, b + 1}
}
