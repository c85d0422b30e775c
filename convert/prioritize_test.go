package convert

import (
	"archive/tar"
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// mergedRootfs applies layers as a snapshotter does and returns the root
// filesystem's entries by path.
func mergedRootfs(t *testing.T, img v1.Image) map[string]entryInfo {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	fs := map[string]entryInfo{}
	for _, l := range layers {
		entries, order := layerEntries(t, l)
		for _, name := range order {
			dir, base := "", name
			if i := strings.LastIndex(name, "/"); i >= 0 {
				dir, base = name[:i+1], name[i+1:]
			}
			switch {
			case base == opaqueWhiteout:
				removeUnder(fs, dir)
			case strings.HasPrefix(base, whiteoutPrefix):
				target := dir + strings.TrimPrefix(base, whiteoutPrefix)
				delete(fs, target)
				removeUnder(fs, target+"/")
			}
		}
		for _, name := range order {
			base := name[strings.LastIndex(name, "/")+1:]
			if strings.HasPrefix(base, whiteoutPrefix) || name == estargz.PrefetchLandmark || name == estargz.NoPrefetchLandmark {
				continue
			}
			fs[name] = entries[name]
		}
	}
	return fs
}

func removeUnder(fs map[string]entryInfo, prefix string) {
	for k := range fs {
		if strings.HasPrefix(k, prefix) {
			delete(fs, k)
		}
	}
}

// prioritizedOf returns the regular files before a layer's prefetch landmark.
func prioritizedOf(t *testing.T, l v1.Layer) []string {
	t.Helper()
	entries, order := layerEntries(t, l)
	var out []string
	for _, name := range order {
		if name == estargz.PrefetchLandmark {
			return out
		}
		if entries[name].Type == tar.TypeReg {
			out = append(out, name)
		}
	}
	return nil
}

func TestPrioritizeAcrossLayers(t *testing.T) {
	lib := dir("usr/lib", 0o750)
	lib.hdr.Uid, lib.hdr.Gid = 5, 6
	lib.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.dir": "kept"}
	base := gzLayer(t,
		dir("etc", 0o755), reg("etc/c", "c"),
		dir("usr", 0o755), dir("usr/bin", 0o755), lib,
		reg("usr/bin/a", "old a"), reg("usr/lib/b", "b"), reg("usr/lib/filler", strings.Repeat("x", 5000)),
	)
	// Like a layer apt-get makes: it lists usr/lib/x/ but not usr/ or usr/lib/.
	top := gzLayer(t,
		dir("usr/lib/x", 0o755), reg("usr/lib/x/lib.so", "lib"), reg("usr/lib/x/other", "other"),
		reg("usr/bin/a", "new a"), reg("etc/.wh.c", ""), symlink("lib", "usr/lib"),
	)
	img := imageOf(t, base, top)
	var (
		mu     sync.Mutex
		warned []string
	)
	warn := func(msg string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		warned = append(warned, args[1].(string))
	}
	out := convertImage(t, img, WithWarnFunc(warn), WithPrioritizedFiles([]string{
		"/usr/lib/x/lib.so", "usr/bin/a", "/etc/c", "/lib/b", "/nope",
	}))
	layers, err := out.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := prioritizedOf(t, layers[0]), []string{"usr/lib/b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("base layer prioritized %v, want %v", got, want)
	}
	if got, want := prioritizedOf(t, layers[1]), []string{"usr/lib/x/lib.so", "usr/bin/a"}; !reflect.DeepEqual(got, want) {
		t.Errorf("top layer prioritized %v, want %v", got, want)
	}
	slices.Sort(warned)
	if want := []string{"/etc/c", "/nope"}; !reflect.DeepEqual(warned, want) {
		t.Errorf("warned about %v, want %v", warned, want)
	}
	before, after := mergedRootfs(t, img), mergedRootfs(t, out)
	if !reflect.DeepEqual(before, after) {
		for _, k := range sortedKeys(after) {
			if before[k].String() != after[k].String() {
				t.Errorf("%s changed:\n  was %v\n  now %v", k, before[k], after[k])
			}
		}
		t.Fatal("the root filesystem changed")
	}
	if _, err := Verify(context.Background(), out, t.TempDir()); err != nil {
		t.Fatal(err)
	}
}
