package fs_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// chainLabels are the labels of a Prepare that commits l as target on top
// of parent ("" for a bottom layer), as the snapshotter passes them.
func chainLabels(ref string, l *builtLayer, parent, target digest.Digest) map[string]string {
	ls := maps.Clone(labels(ref, l))
	ls[lfs.LabelChainID] = target.String()
	if parent != "" {
		ls[lfs.LabelParentChainID] = parent.String()
	}
	return ls
}

// zstdCompression is zstd:chunked as estargz.Build takes it.
type zstdCompression struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

func diffIDLayer(t *testing.T, seed uint64, opts ...estargz.Option) *builtLayer {
	es := []tentry{dir("app/", 0o755), reg("app/big", 3<<20, seed), text("app/small", "hello\n"),
		reg("app/mid", 700<<10, seed+1), reg("empty", 0, 0)}
	return buildLayer(t, es, append([]estargz.Option{estargz.WithChunkSize(256 << 10)}, opts...)...)
}

func mountWith(t *testing.T, f *lfs.FS, ls map[string]string) string {
	t.Helper()
	mp := t.TempDir()
	if err := f.Mount(context.Background(), mp, ls); err != nil {
		t.Fatalf("mount: %v", err)
	}
	return mp
}

func waitDiffID(t *testing.T, f *lfs.FS, mp string) lfs.LayerStatus {
	t.Helper()
	waitFor(t, "the diff_id check", func() bool { return statusOf(t, f, mp).DiffID != lfs.DiffIDPending })
	return statusOf(t, f, mp)
}

// TestDiffIDVerified: an honest layer, bottom or on a parent, gzip or
// zstd:chunked, is verified by its background stream, which also leaves
// every chunk in the cache.
func TestDiffIDVerified(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	parent := digest.FromString("some parent chain")
	zstdOpt := estargz.WithCompression(zstdCompression{
		&zstdchunked.Compressor{CompressionLevel: zstd.SpeedFastest, Metadata: map[string]string{}},
		&zstdchunked.Decompressor{}})
	for _, tc := range []struct {
		name   string
		opts   []estargz.Option
		parent digest.Digest
	}{
		{"gzip bottom", nil, ""},
		{"gzip on a parent", nil, parent},
		{"zstd:chunked on a parent", []estargz.Option{zstdOpt}, parent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := diffIDLayer(t, 71, tc.opts...)
			ref := push(t, registry.Host, "diffid/ok:v1", l)
			f := newFS(t, lfs.WithPrefetch(true))
			mp := mountWith(t, f, chainLabels(ref, l, tc.parent, layer.ChainID(tc.parent, l.diffID)))
			st := waitDiffID(t, f, mp)
			if st.DiffID != lfs.DiffIDVerified || st.State == lfs.StateBad {
				t.Fatalf("honest layer: diff_id %q, state %q (%s)", st.DiffID, st.State, st.Error)
			}
			if st.ChunksPresent != st.ChunksTotal {
				t.Errorf("after the stream %d of %d chunks are cached (background fetch off)", st.ChunksPresent, st.ChunksTotal)
			}
			for _, e := range l.entries {
				if e.typ == '0' {
					checkFile(t, mp, e)
				}
			}
		})
	}
}

// TestDiffIDMismatchMarksLayerBad is the chain-ID takeover: image X's
// layer is committed under the chain ID of image Y's layer (X claims Y's
// diff_id). Its stream finds the real diff_id: the layer is marked bad, its
// reads fail with EIO, Check fails, status and metrics say so.
func TestDiffIDMismatchMarksLayerBad(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	x, y := diffIDLayer(t, 81), diffIDLayer(t, 91)
	ref := push(t, registry.Host, "diffid/x:v1", x)
	f := newFS(t)
	ls := chainLabels(ref, x, "", y.diffID) // X committed as Y's bottom layer
	mp := mountWith(t, f, ls)
	st := waitDiffID(t, f, mp)
	if st.DiffID != lfs.DiffIDMismatch || st.State != lfs.StateBad || st.Error == "" {
		t.Fatalf("lying layer: diff_id %q, state %q, error %q", st.DiffID, st.State, st.Error)
	}
	_, err := os.ReadFile(filepath.Join(mp, "app/small"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("reading a file of the bad layer: %v, want EIO", err)
	}
	if err := f.Check(context.Background(), mp, ls); !errors.Is(err, errdefs.ErrDataLoss) {
		t.Errorf("Check of the bad layer: %v, want data loss", err)
	}
	if v := gaugeValue(t, f.Collector(), "lazysnap_fs_layer_bad"); v != 1 {
		t.Errorf("lazysnap_fs_layer_bad = %v, want 1", v)
	}
	if v := counterValue(t, f.Collector(), "lazysnap_fs_diffid_mismatches_total"); v != 1 {
		t.Errorf("lazysnap_fs_diffid_mismatches_total = %v, want 1", v)
	}
}

// TestDiffIDRegistryCorruptionIsNotTheImages: a registry that spoils the
// stream (a flipped byte) does not get an honest layer marked bad: the
// blob's own digest tells the two apart, and the layer stays pending.
func TestDiffIDRegistryCorruptionIsNotTheImages(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startFaultProxy(t, registry.Host)
	l := diffIDLayer(t, 101)
	push(t, registry.Host, "diffid/spoilt:v1", l)
	f := newFS(t)
	ref := proxy.Host + "/diffid/spoilt:v1"
	mp := mountWith(t, f, chainLabels(ref, l, "", l.diffID)) // footer and TOC arrive intact
	proxy.arm("corrupt", -1)
	st := waitDiffID(t, f, mp)
	if st.DiffID != lfs.DiffIDFailed || st.State == lfs.StateBad {
		t.Fatalf("registry corruption: diff_id %q, state %q, want %q and not bad", st.DiffID, st.State, lfs.DiffIDFailed)
	}
	if proxy.hits.Load() == 0 {
		t.Fatal("no request was spoilt")
	}
}

// TestDiffIDVerifiedOnce: with a verified dir, a layer mounted again (a
// restarted fused) is not streamed again.
func TestDiffIDVerifiedOnce(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	l := diffIDLayer(t, 111)
	push(t, registry.Host, "diffid/once:v1", l)
	ref := proxy.Host + "/diffid/once:v1"
	verified, cacheDir := t.TempDir(), t.TempDir()
	ls := chainLabels(ref, l, "", l.diffID)

	f := newFS(t, lfs.WithVerifiedDir(verified), lfs.WithCacheDir(cacheDir))
	mp := mountWith(t, f, ls)
	if st := waitDiffID(t, f, mp); st.DiffID != lfs.DiffIDVerified {
		t.Fatalf("first mount: diff_id %q (%s)", st.DiffID, st.Error)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g := newFS(t, lfs.WithVerifiedDir(verified), lfs.WithCacheDir(cacheDir))
	before := len(proxy.Requests())
	mp = mountWith(t, g, ls)
	if st := waitDiffID(t, g, mp); st.DiffID != lfs.DiffIDVerified {
		t.Fatalf("second mount: diff_id %q", st.DiffID)
	}
	if n := len(proxy.Requests()) - before; n > 2 { // footer and TOC
		t.Errorf("a verified layer mounted again sent %d requests, want at most 2", n)
	}
}

// TestDiffIDStreamSpoolsFetchedBytes: with a spool dir, the diff_id stream
// takes from the spool what the mount (footer and TOC) and a read fetched
// before the stream came by: the registry serves the blob once, not those
// bytes a second time.
func TestDiffIDStreamSpoolsFetchedBytes(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	l := diffIDLayer(t, 121)
	push(t, registry.Host, "diffid/spool:v1", l)
	ref := proxy.Host + "/diffid/spool:v1"
	proxy.Hold(func(r blobRange) bool { return r.start == 0 }) // the stream's first request
	f := newFS(t, lfs.WithSpoolDir(t.TempDir()))
	mp := mountWith(t, f, chainLabels(ref, l, "", l.diffID))
	<-proxy.Held()
	mid := l.entries[3] // app/mid, after app/big: the stream has not reached it
	checkFile(t, mp, mid)
	proxy.Release()
	st := waitDiffID(t, f, mp)
	if st.DiffID != lfs.DiffIDVerified {
		t.Fatalf("diff_id %q (%s)", st.DiffID, st.Error)
	}
	var served int64
	for _, r := range proxy.Requests() {
		served += r.len()
	}
	// The footer read at mount overlaps the TOC by a few bytes.
	if served > l.size+128 {
		t.Errorf("the registry served %d bytes of a %d-byte blob", served, l.size)
	}
	if st.StreamSpooledBytes < mid.size {
		t.Errorf("the stream took %d bytes from the spool, want at least app/mid's %d", st.StreamSpooledBytes, mid.size)
	}
}
