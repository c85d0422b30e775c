package fs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/cache"
	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// stoppableProxy forwards to a registry until stopped; then connections
// are refused, as from a registry that went away.
type stoppableProxy struct {
	Host string
	srv  *http.Server
}

func startStoppableProxy(t testing.TB, target string) *stoppableProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stoppableProxy{Host: l.Addr().String(),
		srv: &http.Server{Handler: httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})}}
	go p.srv.Serve(l)
	t.Cleanup(p.stop)
	return p
}

func (p *stoppableProxy) stop() { p.srv.Close() }

// openFSAt opens the cache in dir and an FS over it. The cache holds the
// files es, as another mounted image would, so that they outlive this FS:
// Close unmounts its layers, which drop their holds, and unheld entries
// are deleted. stop closes the FS and then the cache; the test's end calls
// it if the test did not.
func openFSAt(t testing.TB, dir string, es []tentry, chunkSize int64, opts ...lfs.Option) (f *lfs.FS, stop func()) {
	t.Helper()
	store, err := cache.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ds []digest.Digest
	for _, e := range es {
		ds = append(ds, fileKey(e, chunkSize))
	}
	if err := store.Hold("test:other-image", ds); err != nil {
		t.Fatal(err)
	}
	base := []lfs.Option{lfs.WithCache(store), lfs.WithResolver(testResolver())}
	if f, err = lfs.New(append(base, opts...)...); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := errors.Join(f.Close(), store.Close()); err != nil {
				t.Errorf("closing the FS and its cache: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return f, stop
}

// fileKey is regular file e's cache key, its content key (fs/index) when
// the layer was built with chunks of chunkSize bytes.
func fileKey(e tentry, chunkSize int64) digest.Digest {
	content, err := io.ReadAll(e.content())
	if err != nil {
		panic(err)
	}
	var chunks []index.Chunk
	for off := int64(0); off < e.size; off += chunkSize {
		n := min(chunkSize, e.size-off)
		chunks = append(chunks, index.Chunk{FileOffset: off, Size: n, Digest: sha256.Sum256(content[off : off+n])})
	}
	return index.ContentKey(e.size, chunks)
}

// cvChunkSize is the chunk size of the layers of these tests.
const cvChunkSize = 512 << 10

// estargzChunkSize is the chunk size estargz.Build uses unless told.
const estargzChunkSize = 4 << 20

// flipBit flips one bit of the cached data of file e at off, behind the
// cache's back, as a failing disk would.
func flipBit(t testing.TB, cacheDir string, e tentry, off int64) {
	t.Helper()
	path := filepath.Join(cacheDir, "files", "sha256", fileKey(e, cvChunkSize).Encoded())
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("opening the cache file of %s: %v", e.name, err)
	}
	defer fh.Close()
	b := make([]byte, 1)
	if _, err := fh.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := fh.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// corruptedCache caches file "full" whole and the first two of the six
// 512 KiB chunks of file "part" through a first FS over a fresh cache
// directory, closes that FS and flips a bit in the cached data of both
// files. It returns the cache directory, for a second FS: a restart.
func corruptedCache(t *testing.T, host string, l *builtLayer, full, part tentry) string {
	t.Helper()
	dir := t.TempDir()
	f, stop := openFSAt(t, dir, []tentry{full, part}, cvChunkSize)
	mp := mount(t, f, host+"/cv/app:v1", l)
	if got, err := os.ReadFile(filepath.Join(mp, full.name)); err != nil || !bytes.Equal(got, expected(t, full, 0, full.size)) {
		t.Fatalf("first read of %s: %v", full.name, err)
	}
	if got := readAt(t, filepath.Join(mp, part.name), 0, 1<<20); !bytes.Equal(got, expected(t, part, 0, 1<<20)) {
		t.Fatalf("first read of %s: wrong bytes", part.name)
	}
	stop()
	flipBit(t, dir, full, 700_000) // the second chunk
	flipBit(t, dir, part, 100)     // the first chunk
	return dir
}

func cacheVerifyLayer(t *testing.T) (*testenv.Registry, *builtLayer, tentry, tentry) {
	testenv.RequireFUSE(t)
	reg := testenv.StartRegistry(t)
	full, part := reg0("full", 3<<20, 41), reg0("part", 3<<20, 42)
	l := buildLayer(t, []tentry{full, part}, estargz.WithChunkSize(cvChunkSize))
	push(t, reg.Host, "cv/app:v1", l)
	return reg, l, full, part
}

// TestCacheCorruptionAfterRestart flips a bit in the cached data of a
// complete file (which a mount would hand to the kernel with passthrough)
// and of a partly cached one, restarts the FS over the same cache and reads
// both through FUSE: the bad chunks are detected, dropped and fetched again,
// and the flipped byte is never returned.
func TestCacheCorruptionAfterRestart(t *testing.T) {
	reg, l, full, part := cacheVerifyLayer(t)
	dir := corruptedCache(t, reg.Host, l, full, part)

	f, stop := openFSAt(t, dir, []tentry{full, part}, cvChunkSize)
	mp := mount(t, f, reg.Host+"/cv/app:v1", l)
	for _, e := range []tentry{full, part} {
		// Twice: the second open may use passthrough once every chunk was
		// checked.
		for pass := range 2 {
			got, err := os.ReadFile(filepath.Join(mp, e.name))
			if err != nil || !bytes.Equal(got, expected(t, e, 0, e.size)) {
				t.Fatalf("pass %d over %s after the restart: %v (content equal: %v)",
					pass, e.name, err, bytes.Equal(got, expected(t, e, 0, e.size)))
			}
		}
	}
	if n := counterValue(t, f.Collector(), "lazysnap_fs_layer_cache_corruptions_total"); n != 2 {
		t.Errorf("lazysnap_fs_layer_cache_corruptions_total = %v, want 2", n)
	}
	if st := statusOf(t, f, mp); st.CacheCorruptions != 2 || st.VerifyFailures != 0 {
		t.Errorf("status: %d cache corruptions and %d verify failures, want 2 and 0",
			st.CacheCorruptions, st.VerifyFailures)
	}

	// The dropped chunks were stored again: a third FS reads everything
	// from the cache, with the registry gone.
	stop()
	proxy := startStoppableProxy(t, reg.Host)
	f, _ = openFSAt(t, dir, []tentry{full, part}, cvChunkSize, lfs.WithPassthrough(false))
	mp = mount(t, f, proxy.Host+"/cv/app:v1", l)
	proxy.stop()
	for _, e := range []tentry{full, part} {
		if got, err := os.ReadFile(filepath.Join(mp, e.name)); err != nil || !bytes.Equal(got, expected(t, e, 0, e.size)) {
			t.Fatalf("%s after a second restart, registry gone: %v", e.name, err)
		}
	}
	if st := statusOf(t, f, mp); st.CacheCorruptions != 0 {
		t.Errorf("%d cache corruptions after the repair, want 0", st.CacheCorruptions)
	}
}

// TestCacheCorruptionRegistryGone flips a bit in the cache, restarts, and
// reads with the registry unreachable: the bad chunk cannot be fetched
// again, so the read fails with EIO instead of returning it, and what was
// read before the error is right.
func TestCacheCorruptionRegistryGone(t *testing.T) {
	reg, l, full, part := cacheVerifyLayer(t)
	dir := corruptedCache(t, reg.Host, l, full, part)

	proxy := startStoppableProxy(t, reg.Host)
	f, _ := openFSAt(t, dir, []tentry{full, part}, cvChunkSize)
	mp := mount(t, f, proxy.Host+"/cv/app:v1", l)
	proxy.stop()
	for _, e := range []tentry{full, part} {
		want := expected(t, e, 0, e.size)
		p := filepath.Join(mp, e.name)
		for pass := range 2 {
			got, err := os.ReadFile(p)
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("pass %d over %s with a corrupt cache and no registry: %v (content equal: %v), want EIO",
					pass, e.name, err, bytes.Equal(got, want))
			}
			if !bytes.Equal(got, want[:len(got)]) {
				t.Fatalf("pass %d over %s read wrong bytes", pass, e.name)
			}
		}
	}
	// The bytes around the flipped one are refused too.
	if _, err := readAtErr(filepath.Join(mp, full.name), 699_000, 4096); !errors.Is(err, syscall.EIO) {
		t.Errorf("read around the flipped byte of %s: %v, want EIO", full.name, err)
	}
	if st := statusOf(t, f, mp); st.CacheCorruptions != 2 {
		t.Errorf("%d cache corruptions, want 2", st.CacheCorruptions)
	}
}

// BenchmarkReadCachedAfterRestart measures what checking a cache left by an
// earlier run costs: it reads a fully cached 64 MiB file through the layer
// (no FUSE, 1 MiB reads) right after reopening the cache ("first": every
// chunk is read back and hashed once) and again in the same process
// ("verified": the steady state). Compare the MB/s.
func BenchmarkReadCachedAfterRestart(b *testing.B) {
	reg, l, _ := benchSetup(b)
	ctx := context.Background()
	blob, err := testResolver().Resolve(ctx, reg.Host+"/bench/app:v1", l.digest)
	if err != nil {
		b.Fatal(err)
	}
	toc, err := layer.ReadTOC(ctx, blob, l.tocDigest)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	// open reopens the cache in dir, as a restarted daemon does, and a layer
	// over it. The cache also holds the file as another image would, so
	// that closing the layer keeps it.
	open := func() (*cache.Store, *layer.Layer) {
		store, err := cache.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		if err := store.Hold("bench:other-image", []digest.Digest{fileKey(l.entries[0], estargzChunkSize)}); err != nil {
			b.Fatal(err)
		}
		ly, err := layer.New(toc, store)
		if err != nil {
			b.Fatal(err)
		}
		return store, ly
	}
	id, ok := toc.Index.Lookup(index.Root, "data")
	if !ok {
		b.Fatal("data not in the index")
	}
	buf := make([]byte, 1<<20)
	readFile := func(ly *layer.Layer) {
		for off := int64(0); off < benchFileSize; off += int64(len(buf)) {
			if _, err := ly.ReadAt(ctx, id, buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
	closeBoth := func(store *cache.Store, ly *layer.Layer) {
		if err := errors.Join(ly.Close(), store.Close()); err != nil {
			b.Fatal(err)
		}
	}
	store, ly := open()
	readFile(ly) // fetch everything once
	closeBoth(store, ly)

	b.Run("first", func(b *testing.B) {
		b.SetBytes(benchFileSize)
		for b.Loop() {
			b.StopTimer()
			store, ly := open()
			b.StartTimer()
			readFile(ly)
			b.StopTimer()
			if st := ly.Stats(); st.Requests != 0 || st.CacheCorruptions != 0 {
				b.Fatalf("%d requests and %d corruptions reading a cached file", st.Requests, st.CacheCorruptions)
			}
			closeBoth(store, ly)
			b.StartTimer()
		}
	})
	// The same through a fresh FUSE mount: the kernel's 128 KiB reads of
	// one chunk arrive together, each wanting the chunk checked.
	b.Run("first-fuse", func(b *testing.B) {
		b.SetBytes(benchFileSize)
		for b.Loop() {
			b.StopTimer()
			f, stop := openFSAt(b, dir, l.entries, estargzChunkSize)
			mp := mount(b, f, reg.Host+"/bench/app:v1", l)
			b.StartTimer()
			if _, err := os.ReadFile(filepath.Join(mp, "data")); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			stop()
			b.StartTimer()
		}
	})
	b.Run("verified", func(b *testing.B) {
		store, ly := open()
		defer closeBoth(store, ly)
		readFile(ly)
		b.SetBytes(benchFileSize)
		for b.Loop() {
			readFile(ly)
		}
	})
}
