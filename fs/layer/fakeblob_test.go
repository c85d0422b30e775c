package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/cache"
	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/fs/remote"
)

// faultBlob is a remote.Blob held in memory that injects the faults a
// registry can cause: it records every Fetch, can hold fetches at a gate,
// and can corrupt the next responses. It is the one fake of these tests;
// the layer, its index, the estargz blob and the cache are real.
type faultBlob struct {
	data []byte
	dgst digest.Digest

	mu      sync.Mutex
	fetches [][2]int64    // off, n of each Fetch
	corrupt int           // the next corrupt fetches flip a byte of their body
	flipAt  int64         // the blob offset of the byte they flip, if in their range; else their middle
	gate    chan struct{} // when set, a Fetch waits for it to close
	began   chan struct{} // when set, gets a value as each Fetch begins
}

func (b *faultBlob) Digest() digest.Digest { return b.dgst }
func (b *faultBlob) Size() int64           { return int64(len(b.data)) }
func (b *faultBlob) Stats() remote.Stats   { return remote.Stats{Requests: int64(b.fetchCount())} }
func (b *faultBlob) TakeTail() []byte      { return nil }

func (b *faultBlob) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	b.mu.Lock()
	b.fetches = append(b.fetches, [2]int64{off, n})
	gate, began := b.gate, b.began
	body := bytes.Clone(b.data[off : off+n])
	if b.corrupt > 0 {
		b.corrupt--
		at := int64(len(body) / 2)
		if b.flipAt >= off && b.flipAt < off+n {
			at = b.flipAt - off
		}
		body[at] ^= 0xff
	}
	b.mu.Unlock()
	if began != nil {
		began <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return io.NopCloser(bytes.NewReader(body)), nil
}

// served returns the Fetches so far, and the bytes they served.
func (b *faultBlob) served() ([][2]int64, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	for _, f := range b.fetches {
		n += f[1]
	}
	return slices.Clone(b.fetches), n
}

func (b *faultBlob) fetchCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.fetches)
}

// testFile is a regular file of a generated layer.
type testFile struct {
	name string
	data []byte
}

func randomData(n int, seed uint64) []byte {
	var s [32]byte
	s[0] = byte(seed)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

// testLayer is a real eStargz layer of files, chunked every chunkSize
// bytes, served by a faultBlob.
type testLayer struct {
	blob   *faultBlob
	toc    *TOC
	diffID digest.Digest
	files  []testFile

	tocFetches [][2]int64 // what reading the TOC fetched (off, n)
}

func buildTestLayer(t testing.TB, chunkSize int, files ...testFile) *testLayer {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.data)
	}
	tw.Close()
	eb, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarBuf.Bytes()), 0, int64(tarBuf.Len())),
		estargz.WithChunkSize(chunkSize))
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close()
	data, err := io.ReadAll(eb)
	if err != nil {
		t.Fatal(err)
	}
	blob := &faultBlob{data: data, dgst: digest.FromBytes(data)}
	toc, err := ReadTOC(t.Context(), blob, eb.TOCDigest())
	if err != nil {
		t.Fatal(err)
	}
	tocFetches := blob.fetches
	blob.fetches = nil // count only what the layer fetches after the TOC
	return &testLayer{blob: blob, toc: toc, diffID: eb.DiffID(), files: files, tocFetches: tocFetches}
}

// open returns a Layer over tl with a fresh cache, closed when the test
// ends.
func (tl *testLayer) open(t testing.TB, opts ...Option) *Layer {
	t.Helper()
	store, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The test layers' chunks stand for estargz's 4 MiB ones: no window
	// unless a test asks for one.
	opts = append([]Option{WithChunkWindow(testChunk)}, opts...)
	l, err := New(tl.toc, store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		store.Close()
	})
	return l
}

// id returns the inode of file name.
func (tl *testLayer) id(t *testing.T, l *Layer, name string) index.ID {
	t.Helper()
	id, ok := l.Index().Lookup(index.Root, name)
	if !ok {
		t.Fatalf("no %s in the layer", name)
	}
	return id
}

// readAll reads file name whole through l and checks its bytes.
func (tl *testLayer) readAll(t *testing.T, l *Layer, name string) error {
	t.Helper()
	var want []byte
	for _, f := range tl.files {
		if f.name == name {
			want = f.data
		}
	}
	got := make([]byte, len(want))
	n, err := l.ReadAt(t.Context(), tl.id(t, l, name), got, 0)
	if err != nil && err != io.EOF {
		return err
	}
	if n != len(want) || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes of %s, not the %d it holds", n, name, len(want))
	}
	return nil
}
