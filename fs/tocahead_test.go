package fs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// twoLayerImage pushes an image of two layers through a recording proxy
// and returns its reference, the layers and the proxy.
func twoLayerImage(t *testing.T, repo string) (string, [2]*builtLayer, *rangeProxy) {
	t.Helper()
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	lower := buildLayer(t, []tentry{dir("etc/", 0o755), text("etc/os", "lower\n")}, estargz.WithChunkSize(1<<20))
	upper := buildLayer(t, []tentry{dir("app/", 0o755), reg("app/bin", 64<<10, 7)}, estargz.WithChunkSize(1<<20))
	push(t, registry.Host, repo, lower, upper)
	return proxy.Host + "/" + repo, [2]*builtLayer{lower, upper}, proxy
}

// imageLabels are the labels of layer l's Prepare, listing the image's
// layers from l up as containerd does.
func imageLabels(ref string, l *builtLayer, from ...*builtLayer) map[string]string {
	ls := labels(ref, l)
	for i, b := range from {
		if i > 0 {
			ls[lfs.LabelImageLayers] += ","
		}
		ls[lfs.LabelImageLayers] += b.digest.String()
	}
	return ls
}

// mountLabels mounts the layer labels describe at a fresh directory.
func mountLabels(t *testing.T, f *lfs.FS, ls map[string]string) (string, error) {
	t.Helper()
	mp := t.TempDir()
	return mp, f.Mount(context.Background(), mp, ls)
}

// awaitRequests waits until the proxy has seen n requests.
func awaitRequests(t *testing.T, proxy *rangeProxy, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(proxy.Requests()) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests after 10 s, want %d: %v", len(proxy.Requests()), n, proxy.Requests())
		}
	}
}

// TestTOCReadAhead: mounting an image's first layer reads the next
// layer's TOC in the background, so that the next layer's Mount sends no
// request of its own, and serves the right bytes. Without the read-ahead
// that Mount costs the requests that read its TOC.
func TestTOCReadAhead(t *testing.T) {
	// Without read-ahead: what each Mount costs.
	ref, ls, proxy := twoLayerImage(t, "ahead/off:v1")
	f := newFS(t, lfs.WithTOCReadAhead(false))
	if _, err := mountLabels(t, f, imageLabels(ref, ls[0], ls[0], ls[1])); err != nil {
		t.Fatal(err)
	}
	lower := len(proxy.Requests())
	if _, err := mountLabels(t, f, imageLabels(ref, ls[1], ls[1])); err != nil {
		t.Fatal(err)
	}
	upper := len(proxy.Requests()) - lower
	if lower == 0 || upper == 0 {
		t.Fatalf("Mounts without read-ahead sent %d and %d requests", lower, upper)
	}

	ref, ls, proxy = twoLayerImage(t, "ahead/on:v1")
	f = newFS(t)
	if _, err := mountLabels(t, f, imageLabels(ref, ls[0], ls[0], ls[1])); err != nil {
		t.Fatal(err)
	}
	awaitRequests(t, proxy, lower+upper)
	mp, err := mountLabels(t, f, imageLabels(ref, ls[1], ls[1]))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(proxy.Requests()) - lower - upper; got != 0 {
		t.Errorf("the upper layer's Mount sent %d requests after its TOC was read ahead, want 0: %v", got, proxy.Requests())
	}
	got, err := os.ReadFile(filepath.Join(mp, "app", "bin"))
	if err != nil {
		t.Fatal(err)
	}
	if e := reg("app/bin", 64<<10, 7); string(got) != string(expected(t, e, 0, e.size)) {
		t.Error("app/bin: content differs")
	}
}

// TestTOCReadAheadStillChecksDigest: a TOC read ahead is used only if it
// is the one the layer's own labels name; with another TOC digest the
// Mount fails as it does without read-ahead (data loss, then the
// snapshotter's fallback), and a layer of another image reads its own.
func TestTOCReadAheadStillChecksDigest(t *testing.T) {
	ref, ls, proxy := twoLayerImage(t, "ahead/digest:v1")
	f := newFS(t)
	if _, err := mountLabels(t, f, imageLabels(ref, ls[0], ls[0], ls[1])); err != nil {
		t.Fatal(err)
	}
	awaitRequests(t, proxy, 4) // footer and TOC of each layer
	wrong := imageLabels(ref, ls[1], ls[1])
	wrong[lfs.LabelTOCDigest] = ls[0].tocDigest.String()
	if _, err := mountLabels(t, f, wrong); !errdefs.IsDataLoss(err) {
		t.Fatalf("Mount with another layer's TOC digest: %v, want data loss", err)
	}
	// The TOC read ahead was taken by that Mount: the next reads its own.
	before := len(proxy.Requests())
	if _, err := mountLabels(t, f, imageLabels(ref, ls[1], ls[1])); err != nil {
		t.Fatal(err)
	}
	if got := len(proxy.Requests()) - before; got != 2 {
		t.Errorf("a Mount after the read-ahead was taken sent %d requests, want 2 (footer, TOC)", got)
	}
}

// TestTOCReadAheadClose: closing the FS while a TOC is being read ahead
// stops that read and returns.
func TestTOCReadAheadClose(t *testing.T) {
	ref, ls, proxy := twoLayerImage(t, "ahead/close:v1")
	if ls[0].size == ls[1].size {
		t.Fatal("the layers' blobs have one size: the hold below cannot tell them apart")
	}
	// Hold the upper layer's footer (the request that ends its blob),
	// which the read-ahead may send before or after the lower's requests.
	proxy.Hold(func(r blobRange) bool { return r.end == ls[1].size })
	f, err := lfs.New(lfs.WithCacheDir(t.TempDir()), lfs.WithResolver(testResolver()))
	if err != nil {
		t.Fatal(err)
	}
	mp := t.TempDir()
	if err := f.Mount(context.Background(), mp, imageLabels(ref, ls[0], ls[0], ls[1])); err != nil {
		t.Fatal(err)
	}
	<-proxy.Held()
	done := make(chan error, 1)
	go func() { done <- f.Close() }()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a TOC was being read ahead")
	}
}
