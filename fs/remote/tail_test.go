package remote

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// footerSize is about what layer.ReadTOC reads first: the footer, the
// blob's last bytes.
const footerSize = 51

// tailBlob resolves the fixture's blob through a fault-injecting proxy,
// asking for its tail as the daemon does (unless opts say otherwise).
func tailBlob(t *testing.T, size int, f fault, opts ...Option) (*fixture, *faultProxy, Blob) {
	t.Helper()
	fx, p, _, b := tailResolver(t, size, f, opts...)
	return fx, p, b
}

// tailResolver is tailBlob, with the resolver.
func tailResolver(t *testing.T, size int, f fault, opts ...Option) (*fixture, *faultProxy, *Resolver, Blob) {
	t.Helper()
	fx := newFixture(t, size)
	p := newFaultProxy(t, fx.reg.Host, f)
	r := NewResolver(testOptions(opts...)...)
	return fx, p, r, resolveAgain(t, r, p, fx)
}

// resolveAgain resolves the fixture's blob with r through p.
func resolveAgain(t *testing.T, r *Resolver, p *faultProxy, fx *fixture) Blob {
	t.Helper()
	b, err := r.Resolve(t.Context(), p.Host()+"/"+testRepo, fx.digest)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != int64(len(fx.data)) {
		t.Fatalf("resolved size %d, want %d", b.Size(), len(fx.data))
	}
	return b
}

func wantStats(t *testing.T, b Blob, want Stats) {
	t.Helper()
	if got := b.Stats(); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
}

// TestTailServesFooterAndTOC is a mount on a fresh node: the resolve, the
// footer and a TOC inside the tail cost one request in all, where they
// cost a HEAD and two Range GETs before.
func TestTailServesFooterAndTOC(t *testing.T) {
	const size, tocSize = 2 << 20, 300_000
	fx, p, b := tailBlob(t, size, nil)
	checkRange(t, b, fx.data, size-footerSize, footerSize)
	checkRange(t, b, fx.data, size-footerSize-tocSize, tocSize)
	if gets, heads := p.gets.Load(), p.heads.Load(); gets != 1 || heads != 0 {
		t.Fatalf("%d blob GETs and %d HEADs, want the one suffix GET", gets, heads)
	}
	wantRanges(t, p, fmt.Sprintf("bytes=-%d", DefaultTailBytes))
	wantStats(t, b, Stats{Requests: 1, BytesFetched: DefaultTailBytes, TailHits: 2})

	// Taking the tail forgets it: Layer.Check's fetch of the last byte
	// reaches the registry again.
	if tail := b.TakeTail(); !bytes.Equal(tail, fx.data[size-DefaultTailBytes:]) {
		t.Fatalf("TakeTail returned %d bytes that are not the blob's last %d", len(tail), DefaultTailBytes)
	}
	if tail := b.TakeTail(); tail != nil {
		t.Fatalf("a second TakeTail returned %d bytes", len(tail))
	}
	checkRange(t, b, fx.data, size-1, 1)
	wantRanges(t, p, fmt.Sprintf("bytes=-%d", DefaultTailBytes), fmt.Sprintf("bytes=%d-%d", size-1, size-1))
}

// TestTOCLargerThanTail: the TOC's range starts before the tail; only the
// bytes before the tail are fetched, in one request, and the tail's are
// joined to them.
func TestTOCLargerThanTail(t *testing.T) {
	const size, tail, tocSize = 1 << 20, 64 << 10, 100_000
	fx, p, b := tailBlob(t, size, nil, WithTailBytes(tail))
	checkRange(t, b, fx.data, size-footerSize, footerSize)
	checkRange(t, b, fx.data, size-footerSize-tocSize, tocSize)
	wantRanges(t, p, fmt.Sprintf("bytes=-%d", tail), fmt.Sprintf("bytes=%d-%d", size-footerSize-tocSize, size-tail-1))
	wantStats(t, b, Stats{Requests: 2, BytesFetched: footerSize + tocSize, TailHits: 2})
	// A range before the tail is fetched as ever.
	checkRange(t, b, fx.data, 10, 1000)
	wantStats(t, b, Stats{Requests: 3, BytesFetched: footerSize + tocSize + 1000, TailHits: 2})
}

// TestTailJoinedAfterResumedHead: the part before the tail resumes after a
// broken body like any stream, and the tail follows it.
func TestTailJoinedAfterResumedHead(t *testing.T) {
	const size, tail, off = 1 << 20, 64 << 10, 300_000
	cut := func(p *faultProxy, n int, w http.ResponseWriter, r *http.Request) bool {
		if n != 1 {
			return false
		}
		truncate(10_000)(p, w, r)
		return true
	}
	fx, p, b := tailBlob(t, size, cut, WithTailBytes(tail))
	checkRange(t, b, fx.data, off, size-off)
	wantRanges(t, p, fmt.Sprintf("bytes=-%d", tail), fmt.Sprintf("bytes=%d-%d", off, size-tail-1),
		fmt.Sprintf("bytes=%d-%d", off+10_000, size-tail-1))
}

// TestTailOfSmallBlob: a blob smaller than the tail comes whole with the
// size, as RFC 9110's suffix range says.
func TestTailOfSmallBlob(t *testing.T) {
	const size = 10_000
	fx, p, b := tailBlob(t, size, nil)
	checkRange(t, b, fx.data, 0, size)
	checkRange(t, b, fx.data, 5, 100)
	wantRanges(t, p, fmt.Sprintf("bytes=-%d", DefaultTailBytes))
	wantStats(t, b, Stats{Requests: 1, BytesFetched: size, TailHits: 2})
}

// TestSuffixGETIgnoredOnLargeBlob is a server ignoring Range: the 200
// tells the size by Content-Length, and its body, the whole blob, is not
// downloaded.
func TestSuffixGETIgnoredOnLargeBlob(t *testing.T) {
	const size = 64 << 20
	pattern := func(i int64) byte { return byte(i % 251) }
	var gets, heads atomic.Int32
	written := make(chan int64, 8) // body bytes each blob GET wrote
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return // the /v2/ ping: 200, no authentication
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		if r.Method == http.MethodHead {
			heads.Add(1)
			return
		}
		gets.Add(1)
		var n int64
		defer func() { written <- n }()
		buf := make([]byte, 32<<10)
		for n < size {
			for i := range buf {
				buf[i] = pattern(n + int64(i))
			}
			m, err := w.Write(buf[:min(int64(len(buf)), size-n)])
			n += int64(m)
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	r := NewResolver(testOptions()...)
	b, err := r.Resolve(t.Context(), host+"/"+testRepo, digest.FromString("large"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != size {
		t.Fatalf("size %d, want %d", b.Size(), size)
	}
	if tail := b.TakeTail(); tail != nil {
		t.Fatalf("kept a tail of %d bytes from a body that is the whole blob", len(tail))
	}
	if g, h := gets.Load(), heads.Load(); g != 1 || h != 0 {
		t.Fatalf("%d GETs and %d HEADs, want the suffix GET alone", g, h)
	}
	// The socket buffers take some MiB before the server notices the
	// client is gone; the blob is far larger.
	select {
	case n := <-written:
		if n > size/4 {
			t.Fatalf("the server wrote %d bytes of the %d-byte blob: the body was read", n, size)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server is still writing the whole blob: its body was not closed")
	}
	// Fetches skip into whole bodies, as for any server ignoring Range.
	got, err := fetchAll(t.Context(), b, 1000, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range got {
		if c != pattern(1000+int64(i)) {
			t.Fatalf("byte %d of the range is %d, want %d", i, c, pattern(1000+int64(i)))
		}
	}
	<-written
	// The host is asked with a HEAD from now on: a suffix GET would cost
	// it a connection cut in a body again.
	if b, err := r.Resolve(t.Context(), host+"/"+testRepo, digest.FromString("other")); err != nil || b.Size() != size {
		t.Fatalf("resolving another blob: %v", err)
	}
	if g, h := gets.Load(), heads.Load(); g != 2 || h != 1 {
		t.Fatalf("%d GETs and %d HEADs, want the second resolve to send a HEAD alone", g, h)
	}
}

// TestSuffixGETIgnoredOnSmallBlob: a 200 no longer than the tail asked for
// is the whole blob, kept as its tail.
func TestSuffixGETIgnoredOnSmallBlob(t *testing.T) {
	const size = 64 << 10
	fx, p, b := tailBlob(t, size, func(p *faultProxy, _ int, w http.ResponseWriter, r *http.Request) bool {
		r.Header.Del("Range")
		p.rp.ServeHTTP(w, r)
		return true
	})
	checkRange(t, b, fx.data, 1000, 2000)
	checkRange(t, b, fx.data, size-footerSize, footerSize)
	if gets, heads := p.gets.Load(), p.heads.Load(); gets != 1 || heads != 0 {
		t.Fatalf("%d blob GETs and %d HEADs, want the one GET", gets, heads)
	}
}

// TestSuffixGETWithoutSizeFallsBackToHEAD: where the suffix GET tells no
// size, a HEAD asks for it as before, and no tail is kept.
func TestSuffixGETWithoutSizeFallsBackToHEAD(t *testing.T) {
	onSuffix := func(answer func(p *faultProxy, w http.ResponseWriter, r *http.Request)) fault {
		return func(p *faultProxy, _ int, w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasPrefix(r.Header.Get("Range"), "bytes=-") {
				return false
			}
			answer(p, w, r)
			return true
		}
	}
	for name, tc := range map[string]struct {
		f         fault
		transient bool // the next resolve asks for the tail again
	}{
		// No support for suffix ranges (or for a zero-length blob's).
		"416": {f: onSuffix(func(_ *faultProxy, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Range", "bytes */*")
			http.Error(w, "range not satisfiable", http.StatusRequestedRangeNotSatisfiable)
		})},
		"200 without length": {f: onSuffix(func(_ *faultProxy, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.Write(make([]byte, 1000))
			http.NewResponseController(w).Flush() // chunked: no Content-Length
		})},
		"206 without Content-Range": {f: onSuffix(func(_ *faultProxy, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusPartialContent)
			w.Write(make([]byte, 1000))
		})},
		"206 without size": {f: onSuffix(func(_ *faultProxy, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-999/*")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(make([]byte, 1000))
		})},
		"503": {transient: true, f: onSuffix(func(_ *faultProxy, w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		})},
	} {
		t.Run(name, func(t *testing.T) {
			const size = 256 << 10
			fx, p, r, b := tailResolver(t, size, tc.f)
			if h := p.heads.Load(); h != 1 {
				t.Fatalf("%d HEADs, want 1 after the suffix GET", h)
			}
			if tail := b.TakeTail(); tail != nil {
				t.Fatalf("kept a tail of %d bytes", len(tail))
			}
			suffix, footer := fmt.Sprintf("bytes=-%d", DefaultTailBytes), fmt.Sprintf("bytes=%d-%d", size-footerSize, size-1)
			checkRange(t, b, fx.data, size-footerSize, footerSize)
			wantRanges(t, p, suffix, footer)
			// A host that refused the suffix range is asked with a HEAD
			// alone from then on; after a transient failure, it is asked
			// for the tail again.
			resolveAgain(t, r, p, fx)
			if tc.transient {
				wantRanges(t, p, suffix, footer, suffix)
			} else {
				wantRanges(t, p, suffix, footer)
			}
			if h := p.heads.Load(); h != 2 {
				t.Fatalf("%d HEADs, want 2 after two resolves", h)
			}
		})
	}
}

// TestSuffixGETOtherRangeTellsSize: a server that answers the suffix GET
// with some other range (capping or misreading it) still tells the size
// in its Content-Range: no HEAD, no tail.
func TestSuffixGETOtherRangeTellsSize(t *testing.T) {
	const size = 1 << 20
	fx, p, r, b := tailResolver(t, size, onFirst(func(p *faultProxy, w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Range", "bytes=0-999")
		p.rp.ServeHTTP(w, r)
	}))
	if h := p.heads.Load(); h != 0 {
		t.Fatalf("%d HEADs, want none", h)
	}
	if tail := b.TakeTail(); tail != nil {
		t.Fatalf("kept %d bytes of the blob's head as its tail", len(tail))
	}
	checkRange(t, b, fx.data, size-footerSize, footerSize)
	// The host is asked with a HEAD from now on.
	resolveAgain(t, r, p, fx)
	if h := p.heads.Load(); h != 1 {
		t.Fatalf("%d HEADs, want 1 for the second resolve", h)
	}
	wantRanges(t, p, fmt.Sprintf("bytes=-%d", DefaultTailBytes), fmt.Sprintf("bytes=%d-%d", size-footerSize, size-1))
}

// TestBrokenTailKeepsSize: a suffix GET whose body breaks has told the
// size already; the blob keeps no tail, and no HEAD is sent.
func TestBrokenTailKeepsSize(t *testing.T) {
	const size = 1 << 20
	fx, p, r, b := tailResolver(t, size, onFirst(truncate(1000)))
	if h := p.heads.Load(); h != 0 {
		t.Fatalf("%d HEADs, want none", h)
	}
	if tail := b.TakeTail(); tail != nil {
		t.Fatalf("kept a tail of %d bytes from a broken body", len(tail))
	}
	checkRange(t, b, fx.data, size-footerSize, footerSize)
	// The host served the range: the next resolve asks for the tail again.
	if tail := resolveAgain(t, r, p, fx).TakeTail(); !bytes.Equal(tail, fx.data[size-DefaultTailBytes:]) {
		t.Fatalf("the next resolve kept %d bytes, not the blob's tail", len(tail))
	}
}

// TestSuffixGETSurvivesRedirect sends the suffix GET to blob storage with
// a 307, as registries backed by object storage do: the storage answers
// the suffix range, and the footer and TOC cost nothing more.
func TestSuffixGETSurvivesRedirect(t *testing.T) {
	const size = 1 << 20
	fx := newFixture(t, size)
	storage := newFaultProxy(t, fx.reg.Host, nil)
	front := newFaultProxy(t, fx.reg.Host, func(_ *faultProxy, _ int, w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, "http://"+storage.Host()+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		return true
	})
	b, err := NewResolver(testOptions()...).Resolve(t.Context(), front.Host()+"/"+testRepo, fx.digest)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != size {
		t.Fatalf("size %d, want %d", b.Size(), size)
	}
	checkRange(t, b, fx.data, size-footerSize, footerSize)
	checkRange(t, b, fx.data, size-200_000, 200_000)
	wantRanges(t, storage, fmt.Sprintf("bytes=-%d", DefaultTailBytes))
	if gets, heads := front.gets.Load(), front.heads.Load(); gets != 1 || heads != 0 {
		t.Fatalf("the registry saw %d blob GETs and %d HEADs, want the one suffix GET", gets, heads)
	}
}
