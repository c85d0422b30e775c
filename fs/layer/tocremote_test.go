package layer

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/cache"
	"github.com/lazysnap/lazysnap/fs/remote"
)

// blobServer is a registry serving one blob, with Range support as
// http.ServeContent gives it (suffix ranges included); it records the
// blob requests.
type blobServer struct {
	srv  *httptest.Server
	data []byte

	mu   sync.Mutex
	reqs []string // "METHOD Range"
}

func newBlobServer(t *testing.T, data []byte) *blobServer {
	s := &blobServer{data: data}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return // the /v2/ ping: 200, no authentication
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, strings.TrimSpace(r.Method+" "+r.Header.Get("Range")))
		s.mu.Unlock()
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(s.data))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *blobServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

// resolve resolves the server's blob with a resolver of opts.
func (s *blobServer) resolve(t *testing.T, opts ...remote.Option) remote.Blob {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections) // no client goroutine outlives the test
	r := remote.NewResolver(append([]remote.Option{remote.WithHostsDir(""), remote.WithTransport(tr)}, opts...)...)
	host := strings.TrimPrefix(s.srv.URL, "http://")
	b, err := r.Resolve(t.Context(), host+"/test/layer", digest.FromBytes(s.data))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// estargzLayer is a real eStargz blob of n files of random data, with its
// TOC digest and diff_id.
func estargzLayer(t *testing.T, n int) ([]byte, digest.Digest, digest.Digest) {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for i := range n {
		data := randomData(16<<10, uint64(i))
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%03d", i), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	eb, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarBuf.Bytes()), 0, int64(tarBuf.Len())))
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close()
	data, err := io.ReadAll(eb)
	if err != nil {
		t.Fatal(err)
	}
	return data, eb.TOCDigest(), eb.DiffID()
}

// TestReadTOCOverRemoteBlob reads the TOC of a layer freshly resolved in a
// registry, as a mount does: with the blob's tail (the default), the
// resolve and the TOC cost one request; with a tail smaller than the TOC,
// two, the second for the TOC's bytes before the tail; without a tail, a
// HEAD and two Range GETs, as before. What the requests received is left
// for the layer's spool.
func TestReadTOCOverRemoteBlob(t *testing.T) {
	data, tocDigest, _ := estargzLayer(t, 64) // 1 MiB of files, a TOC of some KiB
	size := int64(len(data))
	_, tocOff, _, err := new(estargz.GzipDecompressor).ParseFooter(data[size-estargz.FooterSize:])
	if err != nil {
		t.Fatal(err)
	}
	tocSize := size - estargz.FooterSize - tocOff // gzip's footer has none: the TOC runs up to it
	const small = 1024
	if size <= remote.DefaultTailBytes || tocSize <= small {
		t.Fatalf("a blob of %d bytes with a TOC of %d: the cases below need more", size, tocSize)
	}
	t.Logf("a blob of %d bytes, its TOC %d bytes at %d", size, tocSize, tocOff)
	footer := fmt.Sprintf("GET bytes=%d-%d", size-estargz.FooterSize, size-1)
	for _, tc := range []struct {
		name     string
		tail     int64
		requests []string
		fetched  int64 // where the bytes kept for the spool start; they end the blob
	}{
		{"default tail", remote.DefaultTailBytes, []string{fmt.Sprintf("GET bytes=-%d", remote.DefaultTailBytes)},
			size - remote.DefaultTailBytes},
		{"TOC larger than the tail", small, []string{fmt.Sprintf("GET bytes=-%d", small),
			fmt.Sprintf("GET bytes=%d-%d", tocOff, size-small-1)}, tocOff},
		{"no tail", 0, []string{"HEAD", footer, fmt.Sprintf("GET bytes=%d-%d", tocOff, tocOff+tocSize-1)}, tocOff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBlobServer(t, data)
			blob := srv.resolve(t, remote.WithTailBytes(tc.tail))
			toc, err := ReadTOC(t.Context(), blob, tocDigest)
			if err != nil {
				t.Fatal(err)
			}
			if got := srv.requests(); fmt.Sprint(got) != fmt.Sprint(tc.requests) {
				t.Fatalf("requests %q, want %q", got, tc.requests)
			}
			if tail := blob.TakeTail(); tail != nil {
				t.Fatalf("the blob still keeps a tail of %d bytes after ReadTOC", len(tail))
			}
			// The spool gets every byte received: the tail too, not only
			// the footer and the TOC.
			var got spans
			for _, b := range toc.takeFetched() {
				if !bytes.Equal(b.data, data[b.off:b.off+int64(len(b.data))]) {
					t.Fatalf("fetched bytes at %d are not the blob's", b.off)
				}
				got = got.add(b.off, b.off+int64(len(b.data)))
			}
			if len(got) != 1 || got[0].lo != tc.fetched || got[0].hi != size {
				t.Fatalf("fetched %v, want [%d, %d)", got, tc.fetched, size)
			}
			// Layer.Check reaches the registry, not the dropped tail.
			n := len(srv.requests())
			if _, err := readRange(t.Context(), blob, size-1, 1); err != nil {
				t.Fatal(err)
			}
			if len(srv.requests()) != n+1 {
				t.Fatalf("a fetch of the last byte after ReadTOC sent no request")
			}
		})
	}
}

// TestTOCTailTakenByStream: the tail the resolve brought goes to the
// layer's spool with the TOC, and the diff_id stream takes it from there:
// the registry serves no byte of it twice.
func TestTOCTailTakenByStream(t *testing.T) {
	data, tocDigest, diffID := estargzLayer(t, 64)
	size := int64(len(data))
	srv := newBlobServer(t, data)
	toc, err := ReadTOC(t.Context(), srv.resolve(t), tocDigest)
	if err != nil {
		t.Fatal(err)
	}
	store, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(toc, store, WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		store.Close()
	})
	got, err := l.StreamAll(t.Context())
	if err != nil || got != diffID {
		t.Fatalf("StreamAll = %s, %v; want the diff_id %s", got, err, diffID)
	}
	tailAt := size - remote.DefaultTailBytes
	for _, req := range srv.requests()[1:] {
		var lo, hi int64
		if _, err := fmt.Sscanf(req, "GET bytes=%d-%d", &lo, &hi); err != nil || hi >= tailAt {
			t.Errorf("the stream sent %q: the tail from [%d, %d) was not taken from the spool", req, tailAt, size)
		}
	}
	if st := l.Stats(); st.StreamSpooledBytes < remote.DefaultTailBytes {
		t.Errorf("the stream took %d bytes from the spool, want at least the tail's %d", st.StreamSpooledBytes, remote.DefaultTailBytes)
	}
}
