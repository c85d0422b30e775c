package convert

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

type rng = prefetchlist.Range

func rg(start, end int64) rng { return rng{Start: start, End: end} }

// rangesLabel returns layer i's ranges annotation of img, read back with
// prefetchlist as the snapshotter reads it, and whether there is one.
func rangesLabel(t *testing.T, img v1.Image, i int) (prefetchlist.List, bool) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	v, ok := m.Layers[i].Annotations[prefetchlist.LayerAnnotation]
	if !ok {
		return prefetchlist.List{}, false
	}
	if n := len(prefetchlist.LayerAnnotation) + len(v); n > prefetchlist.MaxLabelSize {
		t.Errorf("layer %d: the ranges label takes %d bytes; containerd refuses more than %d", i, n, prefetchlist.MaxLabelSize)
	}
	l, err := prefetchlist.Read(strings.NewReader(v))
	if err != nil || len(l.Rejected) != 0 || len(l.Comments) != 0 {
		t.Fatalf("layer %d: the ranges label %q reads as %+v, %v", i, v, l, err)
	}
	return l, true
}

// TestPrioritizedRanges: of the prioritized files, a large one read in part
// stays after the landmark and its ranges (clipped to the file) go into the
// layer's annotation; one read (nearly) whole, a small one, and one without
// ranges are placed first whole as before. The image still verifies and
// holds the same files.
func TestPrioritizedRanges(t *testing.T) {
	const mib = 1 << 20
	base := gzLayer(t, dir("etc", 0o755), reg("etc/os-release", "debian"),
		dir("usr", 0o755), dir("usr/lib", 0o755), regBytes("usr/lib/libbase.so", randBytes(1, 2*mib)))
	top := gzLayer(t,
		dir("opt", 0o755), dir("opt/jvm", 0o755),
		reg("opt/jvm/java", "java"),
		regBytes("opt/jvm/modules", randBytes(2, 4*mib)),
		regBytes("opt/jvm/libjvm.so", randBytes(3, 2*mib)),
		regBytes("opt/jvm/small.jsa", randBytes(4, 512<<10)),
		symlink("opt/modules", "jvm/modules"),
	)
	img := imageOf(t, base, top)
	paths := []string{"/opt/jvm/java", "/opt/modules", "/opt/jvm/libjvm.so", "/opt/jvm/small.jsa", "/usr/lib/libbase.so", "/etc/os-release"}
	ranges := map[string][]rng{
		// Through the symlink; a range past the end is clipped.
		"/opt/modules":        {rg(0, 256<<10), rg(mib, mib+4096), rg(4*mib-100, 9*mib), rg(20*mib, 21*mib)},
		"/opt/jvm/libjvm.so":  {rg(0, 2*mib-100_000)}, // 95%: whole
		"/opt/jvm/small.jsa":  {rg(0, 4096)},          // too small to bother
		"/usr/lib/libbase.so": {rg(3*mib, 4*mib)},     // nothing inside the file: whole
	}
	opts := []Option{WithChunkSize(64 << 10), WithPrioritizedFiles(paths), WithPrioritizedRanges(ranges)}
	out := convertImage(t, img, opts...)
	layers, err := out.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := prioritizedOf(t, layers[1]), []string{"opt/jvm/java", "opt/jvm/libjvm.so", "opt/jvm/small.jsa"}; !reflect.DeepEqual(got, want) {
		t.Errorf("top layer prioritized %v, want %v (the modules file read in part stays in place)", got, want)
	}
	if got, want := prioritizedOf(t, layers[0]), []string{"usr/lib/libbase.so", "etc/os-release"}; !reflect.DeepEqual(got, want) {
		t.Errorf("base layer prioritized %v, want %v", got, want)
	}
	l, ok := rangesLabel(t, out, 1)
	if !ok {
		t.Fatal("the top layer has no ranges annotation")
	}
	want := []rng{rg(0, 256<<10), rg(mib, mib+4096), rg(4*mib-100, 4*mib)}
	if !slices.Equal(l.Paths, []string{"/opt/jvm/modules"}) || !slices.Equal(l.Ranges["/opt/jvm/modules"], want) {
		t.Errorf("the ranges annotation lists %q with %v; want /opt/jvm/modules with %v", l.Paths, l.Ranges, want)
	}
	if _, ok := rangesLabel(t, out, 0); ok {
		t.Error("the base layer, with no file read in part, has a ranges annotation")
	}
	if before, after := mergedRootfs(t, img), mergedRootfs(t, out); !reflect.DeepEqual(before, after) {
		for _, k := range sortedKeys(after) {
			if !reflect.DeepEqual(before[k], after[k]) {
				t.Errorf("%s changed:\n  was %#v\n  now %#v", k, before[k], after[k])
			}
		}
		t.Fatal("the root filesystem changed")
	}
	if _, err := Verify(context.Background(), out, t.TempDir()); err != nil {
		t.Fatal(err)
	}

	// The same input and options give the same image, byte for byte, on
	// one core or several.
	again := convertImage(t, img, append(opts, WithConcurrency(1), WithLayerWorkers(1))...)
	d1, err := out.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d2, err := again.Digest(); err != nil || d1 != d2 {
		t.Errorf("converting again gave %s (%v); first %s", d2, err, d1)
	}

	// Without ranges, every prioritized file goes first whole, as before.
	plain := convertImage(t, img, WithChunkSize(64<<10), WithPrioritizedFiles(paths))
	pl, err := plain.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if got := prioritizedOf(t, pl[1]); !slices.Contains(got, "opt/jvm/modules") {
		t.Errorf("without ranges the top layer prioritized %v; want the modules file among them", got)
	}
	if _, ok := rangesLabel(t, plain, 1); ok {
		t.Error("a conversion without ranges has a ranges annotation")
	}
}

// TestPrioritizedRangesLabelBound: files whose ranges would make the
// annotation larger than containerd accepts are placed first whole, in
// access order, and the annotation holds those that fit.
func TestPrioritizedRangesLabelBound(t *testing.T) {
	const size = RangedMinSize + 64<<10
	var files []file
	var paths []string
	ranges := map[string][]rng{}
	for i := range 8 {
		p := fmt.Sprintf("data/f%d", i)
		files = append(files, regBytes(p, []byte(strings.Repeat(fmt.Sprintf("%d", i), size))))
		paths = append(paths, "/"+p)
		var rs []rng // 60 ranges of 4 KiB 16 KiB apart: ~1.2 KB of text
		for j := range int64(60) {
			rs = append(rs, rng{Start: j * 16 << 10, End: j*16<<10 + 4096})
		}
		ranges["/"+p] = rs
	}
	// Read backwards, so that access order is not tar order.
	slices.Reverse(paths)
	img := imageOf(t, gzLayer(t, files...))
	out := convertImage(t, img, WithChunkSize(64<<10), WithPrioritizedFiles(paths), WithPrioritizedRanges(ranges))
	l, ok := rangesLabel(t, out, 0)
	if !ok || len(l.Paths) == 0 {
		t.Fatal("no file's ranges in the annotation")
	}
	if !slices.Equal(l.Paths, paths[:len(l.Paths)]) {
		t.Errorf("the annotation lists %q; want the first files in access order, %q", l.Paths, paths)
	}
	for _, p := range l.Paths {
		if !slices.Equal(l.Ranges[p], ranges[p]) {
			t.Errorf("%s: ranges %v in the annotation; want %v", p, l.Ranges[p], ranges[p])
		}
	}
	layers, err := out.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var rest []string
	for _, p := range paths[len(l.Paths):] {
		rest = append(rest, strings.TrimPrefix(p, "/"))
	}
	if got := prioritizedOf(t, layers[0]); len(rest) == 0 || !slices.Equal(got, rest) {
		t.Errorf("prioritized whole %q; want the files the annotation has no room for, %q", got, rest)
	}
	t.Logf("%d files ranged, %d placed whole", len(l.Paths), len(rest))
	if _, err := Verify(context.Background(), out, t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

// TestRangesAnnotationOfSourceDropped: a rebuilt layer does not keep the
// source's ranges annotation, which described another plan.
func TestRangesAnnotationOfSourceDropped(t *testing.T) {
	img := appendLayer(t, imageOf(t), gzLayer(t, reg("a", "a")), map[string]string{
		prefetchlist.LayerAnnotation: "/a\n#@ranges 0-1\n", "keep": "me",
	})
	out := convertImage(t, img)
	m, err := out.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if ann := m.Layers[0].Annotations; ann["keep"] != "me" || ann[prefetchlist.LayerAnnotation] != "" {
		t.Errorf("annotations %v; want the source's other annotations only", ann)
	}
}
