package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// smallImageLayers is a three-layer image: busybox, random files, and
// compressible files of which one overrides a file of the layer below.
func smallImageLayers() []testenv.LayerSpec {
	random := testenv.GeneratedFiles("/data/random", 8, 300<<10, testenv.Random)
	random = append(random, testenv.FileSpec{Path: "/data/random/empty", Size: 0},
		testenv.FileSpec{Path: "/data/deep/a/b/c/d/tiny", Size: 17, Content: testenv.Random})
	text := testenv.GeneratedFiles("/data/text", 4, 1<<20, testenv.Compressible)
	text = append(text, testenv.FileSpec{Path: "/data/random/file000", Size: 4096, Content: testenv.Random, Seed: 1})
	return []testenv.LayerSpec{testenv.BusyboxLayer(), {Files: random}, {Files: text}}
}

// largeImageLayers is busybox plus three layers of ten 10 MiB random files
// (/data/l1..l3/fileNNN): 300 MiB that gzip cannot shrink.
func largeImageLayers() []testenv.LayerSpec {
	layers := []testenv.LayerSpec{testenv.BusyboxLayer()}
	for i := 1; i <= 3; i++ {
		layers = append(layers, testenv.LayerSpec{
			Files: testenv.GeneratedFiles(fmt.Sprintf("/data/l%d", i), 10, 10<<20, testenv.Random),
		})
	}
	return layers
}

// assertSums compares `sha256sum PATHS...` output with the generated files.
func assertSums(t *testing.T, img *testenv.Image, paths []string, got string) {
	t.Helper()
	var want strings.Builder
	for _, p := range paths {
		sum, ok := img.Files[p]
		if !ok {
			t.Fatalf("image has no file %s", p)
		}
		fmt.Fprintf(&want, "%s  %s\n", sum, p)
	}
	if got != want.String() {
		t.Fatalf("sha256sum output differs\n got: %s\nwant: %s", got, want.String())
	}
}

// assertListing compares a container's sha256 listing of dir with the files
// the image was generated from.
func assertListing(t *testing.T, img *testenv.Image, dir, got string) {
	t.Helper()
	want := img.Listing(dir)
	if want == "" {
		t.Fatalf("image has no files under %s", dir)
	}
	if got != want {
		t.Fatalf("listing of %s differs\n got: %s\nwant: %s", dir, firstLines(got, 20), firstLines(want, 20))
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...\n")
	}
	return strings.Join(lines, "")
}
