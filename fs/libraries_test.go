package fs_test

import (
	"archive/tar"
	"os"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/elfdeps"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// libraryImage is a two-layer image around a real binary of this machine:
// the base layer holds the binary's first library under /usr/lib/<triplet>
// and the link /lib -> usr/lib, as Debian's does; the top layer holds the
// binary and its other libraries. The libraries' content is random: only
// their names matter. It returns the layers and the libraries' paths as
// the loader finds them.
func libraryImage(t *testing.T) (base, top *builtLayer, libs []string) {
	t.Helper()
	var bin string
	var deps elfdeps.Deps
	for _, p := range []string{"/usr/bin/ls", "/usr/bin/bash", "/usr/bin/tar", "/usr/bin/find"} {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		d, err := elfdeps.Parse(f)
		f.Close()
		if err == nil && len(d.Needed) >= 2 {
			bin, deps = p, d
			break
		}
	}
	if bin == "" {
		t.Skip("no dynamically linked binary with two libraries on this machine")
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	libDir := path.Dir(elfdeps.SearchPaths(deps, "")[0][1]) // /usr/lib/<triplet>
	if !filepath.IsAbs(libDir) || path.Dir(libDir) != "/usr/lib" {
		t.Skipf("no multiarch directory for this machine (%s)", libDir)
	}
	rel := libDir[1:]
	baseEs := []tentry{
		dir("usr/", 0o755), dir("usr/lib/", 0o755), dir(rel+"/", 0o755),
		{name: "lib", typ: tar.TypeSymlink, mode: 0o777, link: "usr/lib"},
		reg(rel+"/"+deps.Needed[0], 64<<10, 1),
	}
	topEs := []tentry{
		dir("usr/", 0o755), dir("usr/bin/", 0o755), dir("usr/lib/", 0o755), dir(rel+"/", 0o755),
		{name: "usr/bin/prog", typ: tar.TypeReg, mode: 0o755, size: int64(len(data)), data: data},
		reg("usr/bin/zzz", 64<<10, 2), // stored after the binary: no library is its neighbour
	}
	for i, name := range deps.Needed[1:] {
		topEs = append(topEs, reg(rel+"/"+name, 64<<10, uint64(10+i)))
	}
	for _, name := range deps.Needed {
		libs = append(libs, path.Join(libDir, name))
	}
	return buildLayer(t, baseEs), buildLayer(t, topEs), libs
}

// mountLibraryImage mounts both layers of libraryImage through a
// recording proxy with read-ahead off, and returns the FS, the top layer's
// mountpoint, the mountpoint of the layer holding each library, and the
// proxy. The base layer is mounted as another image's, as containerd
// shares a base layer an image pulled before: only its chain ID ties it to
// the top layer.
func mountLibraryImage(t *testing.T, repo string, opts ...lfs.Option) (*lfs.FS, string, map[string]string, []string, *rangeProxy) {
	t.Helper()
	testenv.RequireFUSE(t)
	base, top, libs := libraryImage(t)
	reg := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, reg.Host, 0)
	push(t, reg.Host, repo, base, top)
	push(t, reg.Host, "base-"+repo, base)
	f := newFS(t, append([]lfs.Option{lfs.WithReadAhead(0), lfs.WithPrefetch(false), lfs.WithVerifyDiffID(false)}, opts...)...)
	ref := proxy.Host + "/" + repo
	baseChain := layer.ChainID("", base.diffID)
	baseMP := mountWith(t, f, chainLabels(proxy.Host+"/base-"+repo, base, "", baseChain))
	topMP := mountWith(t, f, chainLabels(ref, top, baseChain, layer.ChainID(baseChain, top.diffID)))
	where := map[string]string{libs[0]: baseMP}
	for _, l := range libs[1:] {
		where[l] = topMP
	}
	return f, topMP, where, libs, proxy
}

// readHead reads the first 4 KiB of a file, as the kernel does when it
// executes one.
func readHead(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Read(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
}

// headsFetched sums the layers' HeadsFetched.
func headsFetched(f *lfs.FS) int64 {
	var n int64
	for _, s := range f.Stats() {
		n += s.HeadsFetched
	}
	return n
}

// metricSum sums every series of counter name the FS exports.
func metricSum(t *testing.T, f *lfs.FS, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(f.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestBinaryHeadFetchesItsLibraries: the first read of a binary's head
// fetches the libraries it needs, found where the loader looks (through
// the base layer's /lib link, and in both layers, the base one another
// image's), so that their first
// reads send no request. Before, each sent one, in turn.
func TestBinaryHeadFetchesItsLibraries(t *testing.T) {
	f, topMP, where, libs, proxy := mountLibraryImage(t, "libs/on:v1")
	readHead(t, filepath.Join(topMP, "usr/bin/prog"))
	for deadline := time.Now().Add(10 * time.Second); headsFetched(f) < int64(len(libs)); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d libraries %q fetched ahead after 10 s", headsFetched(f), len(libs), libs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := len(proxy.Requests())
	for _, lib := range libs {
		if _, err := os.ReadFile(filepath.Join(where[lib], lib)); err != nil {
			t.Fatal(err)
		}
	}
	if rs := proxy.Requests()[before:]; len(rs) != 0 {
		t.Errorf("reading the %d libraries after the binary's head sent %d requests, want none: %v", len(libs), len(rs), rs)
	}
	if n := metricSum(t, f, "lazysnap_fs_layer_heads_fetched_total"); n != float64(len(libs)) {
		t.Errorf("lazysnap_fs_layer_heads_fetched_total = %v, want %d", n, len(libs))
	}
}

// TestLibraryPrefetchOff: with it off, each library's first read is a
// request of its own.
func TestLibraryPrefetchOff(t *testing.T) {
	f, topMP, where, libs, proxy := mountLibraryImage(t, "libs/off:v1", lfs.WithLibraryPrefetch(false))
	readHead(t, filepath.Join(topMP, "usr/bin/prog"))
	before := len(proxy.Requests())
	for _, lib := range libs {
		if _, err := os.ReadFile(filepath.Join(where[lib], lib)); err != nil {
			t.Fatal(err)
		}
	}
	if rs := proxy.Requests()[before:]; len(rs) != len(libs) {
		t.Errorf("reading the %d libraries sent %d requests, want one each: %v", len(libs), len(rs), rs)
	}
	if n := headsFetched(f); n != 0 {
		t.Errorf("%d libraries fetched ahead with it off", n)
	}
}
