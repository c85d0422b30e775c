package fs_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/lazysnap/lazysnap/cache"
	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// expected returns the bytes [off, off+n) of entry e.
func expected(t testing.TB, e tentry, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	r := e.content()
	if _, err := io.CopyN(io.Discard, r, off); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOneByteOfLargeFile reads one byte in the middle of a 200 MB file and
// checks at the registry that at most two chunks' worth was fetched.
func TestOneByteOfLargeFile(t *testing.T) {
	testenv.RequireFUSE(t)
	if testing.Short() {
		t.Skip("builds a 200 MB layer")
	}
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartCountingProxy(t, reg.Host)
	const chunk = 4 << 20
	big := reg0("big", 200_000_000, 7)
	l := buildLayer(t, []tentry{big}, estargz.WithChunkSize(chunk))
	push(t, reg.Host, "large/app:v1", l)
	f := newFS(t)
	mp := mount(t, f, proxy.Host+"/large/app:v1", l)
	proxy.Reset()

	const off = 100_000_007
	fh, err := os.Open(filepath.Join(mp, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	got := make([]byte, 1)
	if _, err := fh.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if want := expected(t, big, off, 1); !bytes.Equal(got, want) {
		t.Fatalf("byte at %d = %x, want %x", off, got, want)
	}
	// Random data does not compress: a chunk is stored in about its size.
	if n, limit := proxy.BlobBytes(), int64(2*chunk*101/100); n > limit {
		t.Errorf("reading 1 byte fetched %d bytes from the registry, more than two chunks (%d)", n, limit)
	}
	t.Logf("1 byte of a 200 MB file: %d bytes in %d range requests", proxy.BlobBytes(), proxy.RangeGets())
}

// reg0 is a regular file of random content.
func reg0(name string, size int64, seed uint64) tentry { return reg(name, size, seed) }

// openLayer opens layer l of ref directly, without FUSE.
func openLayer(t testing.TB, host, repoTag string, l *builtLayer, store *cache.Store) *layer.Layer {
	t.Helper()
	blob, err := testResolver().Resolve(context.Background(), host+"/"+repoTag, l.digest)
	if err != nil {
		t.Fatal(err)
	}
	toc, err := layer.ReadTOC(context.Background(), blob, l.tocDigest)
	if err != nil {
		t.Fatal(err)
	}
	ly, err := layer.New(toc, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ly.Close() })
	return ly
}

func openStore(t testing.TB) *cache.Store {
	t.Helper()
	s, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConcurrentReadersOneRequest starts many readers of one chunk at once,
// through the layer and through the FUSE mount, and counts one request.
func TestConcurrentReadersOneRequest(t *testing.T) {
	testenv.RequireFUSE(t)
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartCountingProxy(t, reg.Host)
	file := reg0("data", 3<<20, 9) // one 4 MiB chunk
	l := buildLayer(t, []tentry{file})
	push(t, reg.Host, "conc/app:v1", l)
	want := expected(t, file, 1<<20, 64<<10)
	const readers = 32

	t.Run("layer", func(t *testing.T) {
		ly := openLayer(t, proxy.Host, "conc/app:v1", l, openStore(t))
		id, ok := ly.Index().Lookup(index.Root, "data")
		if !ok {
			t.Fatal("data not in the index")
		}
		proxy.Reset()
		readAll(t, readers, want, func(p []byte) (int, error) { return ly.ReadAt(context.Background(), id, p, 1<<20) })
		if n := proxy.RangeGets(); n != 1 {
			t.Errorf("%d concurrent readers of one chunk sent %d requests, want 1", readers, n)
		}
	})
	t.Run("fuse", func(t *testing.T) {
		f := newFS(t)
		mp := mount(t, f, proxy.Host+"/conc/app:v1", l)
		proxy.Reset()
		readAll(t, readers, want, func(p []byte) (int, error) {
			fh, err := os.Open(filepath.Join(mp, "data"))
			if err != nil {
				return 0, err
			}
			defer fh.Close()
			return fh.ReadAt(p, 1<<20)
		})
		if n := proxy.RangeGets(); n != 1 {
			t.Errorf("%d concurrent readers of one chunk sent %d requests, want 1", readers, n)
		}
	})
}

// readAll runs n readers released at once and checks what each read.
func readAll(t *testing.T, n int, want []byte, read func(p []byte) (int, error)) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			p := make([]byte, len(want))
			<-start
			if _, err := read(p); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(p, want) {
				errs <- io.ErrUnexpectedEOF
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("reader: %v", err)
	}
}

// TestSharedFilesFetchedOnce mounts two layers holding the same file and
// checks that its chunks cross the network once.
func TestSharedFilesFetchedOnce(t *testing.T) {
	testenv.RequireFUSE(t)
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartCountingProxy(t, reg.Host)
	shared := reg0("lib/shared.so", 6<<20, 11)
	a := buildLayer(t, []tentry{dir("lib/", 0o755), shared, text("a", "a\n")}, estargz.WithChunkSize(1<<20))
	b := buildLayer(t, []tentry{dir("lib/", 0o755), text("b", "b\n"), shared}, estargz.WithChunkSize(1<<20))
	push(t, reg.Host, "shared/a:v1", a)
	push(t, reg.Host, "shared/b:v1", b)
	f := newFS(t)
	mpA := mount(t, f, proxy.Host+"/shared/a:v1", a)
	mpB := mount(t, f, proxy.Host+"/shared/b:v1", b)
	want := expected(t, shared, 0, shared.size)

	proxy.Reset()
	var wg sync.WaitGroup
	for _, mp := range []string{mpA, mpB} {
		wg.Go(func() {
			got, err := os.ReadFile(filepath.Join(mp, "lib/shared.so"))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("reading the shared file in %s: %v (content equal: %v)", mp, err, bytes.Equal(got, want))
			}
		})
	}
	wg.Wait()
	// Random data does not compress: one copy is about shared.size bytes.
	if n := proxy.BlobBytes(); n > shared.size*11/10 {
		t.Errorf("two layers sharing a %d byte file fetched %d bytes, more than one copy", shared.size, n)
	}
	before := proxy.BlobBytes()
	// A third reader in a fresh mount of layer b is served by the cache.
	f.Unmount(context.Background(), mpB)
	mpB = mount(t, f, proxy.Host+"/shared/b:v1", b)
	proxy.Reset()
	if got, err := os.ReadFile(filepath.Join(mpB, "lib/shared.so")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("re-reading the shared file: %v", err)
	}
	if n := proxy.BlobBytes(); n != 0 {
		t.Errorf("re-reading a cached shared file fetched %d bytes (first reads: %d)", n, before)
	}
}

// TestMountRefusals checks the errors Mount gives for what it must refuse.
func TestMountRefusals(t *testing.T) {
	testenv.RequireFUSE(t)
	reg := testenv.StartRegistry(t)
	one := buildLayer(t, []tentry{text("one", "1\n")})
	two := buildLayer(t, []tentry{text("two", "2\n")})
	ref := push(t, reg.Host, "refuse/app:v1", one, two)
	f := newFS(t)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		is     func(error) bool
	}{
		{"wrong TOC digest", func() map[string]string {
			l := labels(ref, one)
			l[lfsLabelTOC] = two.tocDigest.String()
			return l
		}(), errdefs.IsFailedPrecondition},
		{"no ref", func() map[string]string { l := labels(ref, one); delete(l, lfsLabelRef); return l }(), errdefs.IsInvalidArgument},
		{"no TOC digest", func() map[string]string { l := labels(ref, one); delete(l, lfsLabelTOC); return l }(), errdefs.IsInvalidArgument},
		{"unknown blob", func() map[string]string {
			l := labels(ref, one)
			l[lfsLabelLayer] = "sha256:" + string(bytes.Repeat([]byte("0"), 64))
			return l
		}(), errdefs.IsNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mp := t.TempDir()
			err := f.Mount(context.Background(), mp, tc.labels)
			if err == nil {
				f.Unmount(context.Background(), mp)
				t.Fatal("Mount succeeded")
			}
			if !tc.is(err) {
				t.Errorf("Mount: %v: wrong category", err)
			}
			if ents, _ := os.ReadDir(mp); len(ents) != 0 {
				t.Errorf("%s is not empty after a refused mount", mp)
			}
		})
	}
}
