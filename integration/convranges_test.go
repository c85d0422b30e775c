package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// TestConvertedRangesThroughContainerd converts with a list whose large
// file has "#@ranges" (as lazysnap's traces record a JVM reading part of
// its module image): the file stays out of the prioritized region and its
// ranges go into the layer annotation. Pulled through real containerd,
// whose unpacker turns the annotation into a Prepare label, lazysnap
// prefetches those ranges at mount: the layer has the ranges in its cache
// after the prefetch, not the whole file, and reading inside them sends no
// request.
func TestConvertedRangesThroughContainerd(t *testing.T) {
	e := newLazyEnv(t)
	// Only prefetch and reads are to fetch anything.
	e.extraConfig = "[background_fetch]\nenable = false\n[verify]\ndiff_id = false\n"
	e.start(t)
	const chunk = prefetchChunk
	big := testenv.FileSpec{Path: "/data/big", Size: 8 * chunk, Content: testenv.Random}
	small := testenv.FileSpec{Path: "/data/small", Size: 64 << 10, Content: testenv.Random}
	img := testenv.BuildImage(t, e.reg, "ranges:gzip", testenv.BusyboxLayer(),
		testenv.LayerSpec{Files: []testenv.FileSpec{small, big, {Path: "/data/other", Size: 2 * chunk, Content: testenv.Random}}})
	list := filepath.Join(t.TempDir(), "trace.txt")
	text := fmt.Sprintf("/data/small\n/data/big\n#@ranges 0-%d,%d-%d\n", chunk, 4*chunk, 5*chunk)
	if err := os.WriteFile(list, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := e.reg.Ref("ranges:lazy")
	runBinary(t, testenv.LazyconvBin(), "convert", "--plain-http", "--chunk-size", strconv.Itoa(chunk),
		"--prioritize", list, img.Ref, dst)
	layouts := readLayouts(t, dst)
	data := layouts[1]
	if !slices.Equal(data.prioritized, []string{"/data/small"}) {
		t.Errorf("the data layer places %q before its landmark; want /data/small only", data.prioritized)
	}
	assertRangesAnnotation(t, dst, 1, "/data/big")

	ref := testenv.RefVia(dst, e.proxy.Host)
	e.lazysnapPull(t, ref)
	st := waitPrefetched(t, e, ref, len(layouts))[data.digest]
	want := small.Size + 2*chunk
	t.Logf("data layer: %d bytes in the cache after the prefetch; %d of /data/small and the ranges of the %d-byte /data/big",
		st.BytesPresent, want, big.Size)
	if st.BytesPresent < want || st.BytesPresent >= want+chunk {
		t.Errorf("data layer: %d bytes prefetched; want the %d of /data/small and /data/big's ranges: the ranges label did not arrive, or the file came whole",
			st.BytesPresent, want)
	}

	e.proxy.Reset()
	readRanges := fmt.Sprintf("dd if=/data/big bs=4096 count=16 2>/dev/null | sha256sum && dd if=/data/big bs=4096 skip=%d count=16 2>/dev/null | sha256sum", 4*chunk/4096)
	e.run(t, ref, "ranges-read", "/bin/sh", "-c", readRanges)
	for _, q := range rangeRequests(e.proxy) {
		if q.blob == data.digest && overlapsAny(q.r, data.files["/data/big"]) {
			t.Errorf("reading inside /data/big's ranges fetched %v: the prefetch missed them", q.r)
		}
	}
	out := e.run(t, ref, "ranges-all", "sha256sum", "/data/small", "/data/big", "/data/other")
	if w := sumLines(t, img, []string{"/data/small", "/data/big", "/data/other"}); out != w {
		t.Errorf("checksums\n got: %s\nwant: %s", out, w)
	}
}

// assertRangesAnnotation checks that layer i of ref has a ranges
// annotation naming exactly path.
func assertRangesAnnotation(t *testing.T, ref string, i int, path string) {
	t.Helper()
	img := remoteImage(t, ref)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	v, ok := m.Layers[i].Annotations[prefetchlist.LayerAnnotation]
	if !ok {
		t.Fatalf("layer %d of %s has no %s annotation", i, ref, prefetchlist.LayerAnnotation)
	}
	if l, _ := prefetchlist.Read(strings.NewReader(v)); !slices.Equal(l.Paths, []string{path}) {
		t.Errorf("layer %d's ranges annotation %q lists %q; want %s", i, v, l.Paths, path)
	}
}

// remoteImage reads ref's image from its (plain HTTP) registry.
func remoteImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	return img
}
