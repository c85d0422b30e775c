package fs_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/lazysnap/lazysnap/convert"
	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// pushConverted converts a one-layer image of es with lazyconv's converter,
// prioritizing paths with their ranges, pushes it to the registry at host
// and returns the labels containerd passes for its layer (the layer's
// annotations that start with containerd.io/snapshot/ included), with ref
// as the image reference.
func pushConverted(t *testing.T, host, repoTag, ref string, es []tentry, paths []string, ranges map[string][]prefetchlist.Range) map[string]string {
	t.Helper()
	src, err := tarball.LayerFromFile(writeTar(t, es))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, src)
	if err != nil {
		t.Fatal(err)
	}
	c, err := convert.New(convert.WithWorkDir(t.TempDir()), convert.WithChunkSize(rangesChunk),
		convert.WithPrioritizedFiles(paths), convert.WithPrioritizedRanges(ranges))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, err := c.Image(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := ggcr.Write(r, out); err != nil {
		t.Fatal(err)
	}
	m, err := out.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	desc := m.Layers[0]
	ls := map[string]string{lfs.LabelImageRef: ref, lfs.LabelLayerDigest: desc.Digest.String()}
	for k, v := range desc.Annotations {
		if strings.HasPrefix(k, "containerd.io/snapshot/") {
			ls[k] = v
		}
	}
	if ls[lfs.LabelTOCDigest] == "" {
		t.Fatalf("the converted layer has no TOC digest annotation: %v", desc.Annotations)
	}
	return ls
}

// TestConvertedRangesPrefetch: an image converted with a trace's ranges
// leaves the large file start-up reads in part out of its prioritized
// region and names its ranges in a layer annotation; mounted with that
// label, the layer prefetches the region and only the ranges of the large
// file, so start-up's reads send no request and the registry serves about
// the ranges' bytes rather than the whole file.
func TestConvertedRangesPrefetch(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	java, modules, other := reg("bin/java", 20<<10, 1), reg("lib/modules", 8<<20, 2), reg("lib/other", 2<<20, 3)
	rs := []prefetchlist.Range{{Start: 0, End: rangesChunk}, {Start: 5 * rangesChunk, End: 6*rangesChunk + 100}}
	ref := proxy.Host + "/conv/jvm:v1"
	lbls := pushConverted(t, registry.Host, "conv/jvm:v1", ref, []tentry{dir("bin", 0o755), dir("lib", 0o755), java, modules, other},
		[]string{"/bin/java", "/lib/modules"}, map[string][]prefetchlist.Range{"/lib/modules": rs})
	if _, ok := lbls[lfs.LabelPrefetchRanges]; !ok {
		t.Fatalf("the converted layer has no %s annotation: %v", lfs.LabelPrefetchRanges, lbls)
	}

	f := newFS(t, lfs.WithPrefetch(true), lfs.WithBackgroundFetch(false))
	mp := t.TempDir()
	before := len(proxy.Requests())
	if err := f.Mount(context.Background(), mp, lbls); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the prefetch", func() bool { return statusOf(t, f, mp).PrefetchDone })
	// The footer and TOC, bin/java, the chunks the ranges touch (three of
	// 512 KiB; random bytes compress to a little more) and gaps read
	// through.
	got, want := requestBytes(proxy.Requests()[before:]), int64(3*rangesChunk)
	t.Logf("mount and prefetch fetched %d bytes for %d bytes of ranged chunks", got, want)
	if got < want || got > want+1<<20 {
		t.Errorf("mount and prefetch fetched %d bytes; want the %d bytes of the ranges' chunks and little more (not the 8 MiB file)", got, want)
	}
	prefetched := len(proxy.Requests())
	checkFile(t, mp, java)
	mf, err := os.Open(filepath.Join(mp, modules.name))
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	preadCheck(t, mf, modules, 0, 64<<10)
	preadCheck(t, mf, modules, 6*rangesChunk, 4096)
	if n := len(proxy.Requests()) - prefetched; n != 0 {
		t.Errorf("start-up's reads inside the prefetched ranges sent %d requests, want 0", n)
	}
	preadCheck(t, mf, modules, 3*rangesChunk, 4096) // outside the ranges: fetched now
	if n := len(proxy.Requests()) - prefetched; n == 0 {
		t.Error("reading outside the ranges sent no request")
	}
	checkFile(t, mp, modules)
	checkFile(t, mp, other)
}

// TestHostilePrefetchRangesLabel mounts a converted layer with ranges
// labels no converter writes: paths the layer lacks or that are no regular
// file, ranges past the end, garbage, a label larger than containerd
// passes. Each mounts, prefetches what is sane of it, and serves every
// byte right.
func TestHostilePrefetchRangesLabel(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	java, modules := reg("bin/java", 20<<10, 1), reg("lib/modules", 4<<20, 2)
	ref := registry.Host + "/conv/hostile:v1"
	lbls := pushConverted(t, registry.Host, "conv/hostile:v1", ref, []tentry{dir("bin", 0o755), dir("lib", 0o755), java, modules},
		[]string{"/bin/java", "/lib/modules"}, map[string][]prefetchlist.Range{"/lib/modules": {{Start: 0, End: 4096}}})
	huge := "/lib/modules\n#@ranges " + strings.Repeat("1", 5000) + "-" + strings.Repeat("9", 5000) + "\n"
	cases := map[string]string{
		"foreign":    "/no/such/file\n#@ranges 0-4096\n/bin\n#@ranges 0-10\n/lib/modules/below\n#@ranges 0-1\n",
		"past-eof":   "/lib/modules\n#@ranges 0-10,99999999999-999999999999\n/bin/java\n#@ranges 1000000-1000001\n",
		"garbage":    "\x00\x01\n#@ranges -5-3\n../../etc/passwd\n#@ranges 0-9223372036854775807\n/lib/modules\n#@ranges 9-3\n#@ranges 1-2,0-1\n\xff\xfe",
		"empty":      "",
		"huge":       huge + strings.Repeat("/x\n", 2000),
		"overflow":   "/lib/modules\n#@ranges 0-99999999999999999999999\n",
		"whole-only": "/lib/modules\n/bin/java\n",
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			ls := maps.Clone(lbls)
			ls[lfs.LabelPrefetchRanges] = v
			f := newFS(t, lfs.WithPrefetch(true), lfs.WithBackgroundFetch(false))
			mp := t.TempDir()
			if err := f.Mount(context.Background(), mp, ls); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the prefetch", func() bool { return statusOf(t, f, mp).PrefetchDone })
			checkFile(t, mp, java)
			checkFile(t, mp, modules)
		})
	}
}
