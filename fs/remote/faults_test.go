package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// faultBlob resolves the fixture's blob through a fault-injecting proxy.
// Its resolve asks for no tail (unless opts do), so that the faults and the
// GETs recorded are the fetch streams' (tail_test.go covers the tail).
func faultBlob(t *testing.T, size int, f fault, opts ...Option) (*fixture, *faultProxy, Blob) {
	t.Helper()
	fx := newFixture(t, size)
	p := newFaultProxy(t, fx.reg.Host, f)
	opts = append([]Option{WithTailBytes(0)}, opts...)
	b, err := NewResolver(testOptions(opts...)...).Resolve(t.Context(), p.Host()+"/"+testRepo, fx.digest)
	if err != nil {
		t.Fatal(err)
	}
	return fx, p, b
}

func wantRanges(t *testing.T, p *faultProxy, want ...string) {
	t.Helper()
	got := p.rangeHeaders()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("blob GETs with Range %q, want %q", got, want)
	}
}

func TestTruncatedBodyResumes(t *testing.T) {
	const off, n, cut = 10_000, 1 << 20, 300_000
	fx, p, b := faultBlob(t, 2<<20, onFirst(truncate(cut)))
	checkRange(t, b, fx.data, off, n)
	wantRanges(t, p, fmt.Sprintf("bytes=%d-%d", off, off+n-1), fmt.Sprintf("bytes=%d-%d", off+cut, off+n-1))
	if st := b.Stats(); st.Retries != 1 || st.Requests != 2 || st.BytesFetched != n {
		t.Fatalf("stats %+v, want 1 retry, 2 requests, %d bytes", st, n)
	}
}

func TestStallResumes(t *testing.T) {
	const off, n, cut = 5, 1 << 20, 100_000
	started := make(chan struct{})
	fx, p, b := faultBlob(t, 2<<20, onFirst(stallAfter(cut, started)), WithStallTimeout(200*time.Millisecond))
	checkRange(t, b, fx.data, off, n)
	wantRanges(t, p, fmt.Sprintf("bytes=%d-%d", off, off+n-1), fmt.Sprintf("bytes=%d-%d", off+cut, off+n-1))
	if st := b.Stats(); st.Retries != 1 {
		t.Fatalf("stats %+v, want 1 retry", st)
	}
}

func Test503ThenOK(t *testing.T) {
	fx, p, b := faultBlob(t, 1<<20, status(http.StatusServiceUnavailable, func(n int) bool { return n < 2 }))
	checkRange(t, b, fx.data, 777, 4096)
	wantRanges(t, p, "bytes=777-4872", "bytes=777-4872", "bytes=777-4872")
	if st := b.Stats(); st.Retries != 2 || st.Requests != 3 {
		t.Fatalf("stats %+v, want 2 retries in 3 requests", st)
	}
}

func TestConnectionResetHeals(t *testing.T) {
	fx, p, b := faultBlob(t, 1<<20, onFirst(reset))
	checkRange(t, b, fx.data, 4096, 8192)
	// Go's transport may itself resend a GET whose reused connection was
	// reset, so the retry may not be ours; the proxy saw it either way.
	if got := p.gets.Load(); got != 2 {
		t.Fatalf("%d blob GETs, want 2", got)
	}
}

func TestNotFoundFailsFast(t *testing.T) {
	_, p, b := faultBlob(t, 1024, status(http.StatusNotFound, func(int) bool { return true }))
	_, err := fetchAll(t.Context(), b, 0, 10)
	if !errdefs.IsNotFound(err) {
		t.Fatalf("Fetch of a vanished blob: %v, want ErrNotFound", err)
	}
	if got := p.gets.Load(); got != 1 {
		t.Fatalf("%d blob GETs, want 1 (no retry of a 404)", got)
	}
}

func TestPersistent503GivesUp(t *testing.T) {
	const retries = 3
	_, p, b := faultBlob(t, 1024, status(http.StatusServiceUnavailable, func(int) bool { return true }), WithMaxRetries(retries))
	_, err := fetchAll(t.Context(), b, 0, 10)
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("Fetch under persistent 503: %v, want ErrUnavailable", err)
	}
	if got := p.gets.Load(); got != retries+1 {
		t.Fatalf("%d blob GETs, want %d", got, retries+1)
	}
	if st := b.Stats(); st.Retries != retries {
		t.Fatalf("stats %+v, want %d retries", st, retries)
	}
}

func TestCancelAbortsStalledFetch(t *testing.T) {
	started := make(chan struct{})
	_, _, b := faultBlob(t, 1<<20, onFirst(stallAfter(1000, started)), WithStallTimeout(time.Hour))
	ctx, cancel := context.WithCancel(t.Context())
	rc, err := b.Fetch(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, rc)
		done <- err
	}()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("read of a cancelled stalled fetch: %v, want context.Canceled", err)
	}
}

// TestRangeSurvivesRedirect sends blob GETs to another host with a 307, as
// registries backed by object storage do.
func TestRangeSurvivesRedirect(t *testing.T) {
	fx := newFixture(t, 1<<20)
	storage := newFaultProxy(t, fx.reg.Host, nil)
	front := newFaultProxy(t, fx.reg.Host, func(_ *faultProxy, _ int, w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, "http://"+storage.Host()+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		return true
	})
	b, err := NewResolver(testOptions(WithTailBytes(0))...).Resolve(t.Context(), front.Host()+"/"+testRepo, fx.digest)
	if err != nil {
		t.Fatal(err)
	}
	checkRange(t, b, fx.data, 1234, 5678)
	wantRanges(t, storage, "bytes=1234-6911")
	if st := b.Stats(); st.BytesFetched != 5678 {
		t.Fatalf("stats %+v, want only the range fetched", st)
	}
}

// TestServerIgnoringRange strips Range before the registry sees it: the
// stream drops the leading bytes of the full body.
func TestServerIgnoringRange(t *testing.T) {
	fx, _, b := faultBlob(t, 64<<10, func(p *faultProxy, _ int, w http.ResponseWriter, r *http.Request) bool {
		r.Header.Del("Range")
		p.rp.ServeHTTP(w, r)
		return true
	})
	checkRange(t, b, fx.data, 1000, 2000)
	checkRange(t, b, fx.data, 0, b.Size())
}

func TestStallBeforeHeadersResumes(t *testing.T) {
	silent := func(_ *faultProxy, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	fx, p, b := faultBlob(t, 256<<10, onFirst(silent), WithStallTimeout(200*time.Millisecond))
	checkRange(t, b, fx.data, 10, 100)
	wantRanges(t, p, "bytes=10-109", "bytes=10-109")
}

// TestRangeAnsweredWith200AndContentRange is how Dragonfly's dfdaemon (a
// P2P proxy containerd reaches through hosts.toml) answers a Range GET: 200
// with the range's Content-Range and only the range in the body. The body
// is the range, not a whole blob to skip into.
func TestRangeAnsweredWith200AndContentRange(t *testing.T) {
	fx, _, b := faultBlob(t, 64<<10, func(p *faultProxy, _ int, w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.Header.Get("Range") == "" {
			return false
		}
		rec := &statusRewriter{ResponseWriter: w}
		p.rp.ServeHTTP(rec, r)
		return true
	})
	checkRange(t, b, fx.data, 1000, 2000)
	checkRange(t, b, fx.data, 0, b.Size())
}

// statusRewriter turns a 206 into a 200, keeping headers and body.
type statusRewriter struct{ http.ResponseWriter }

func (s *statusRewriter) WriteHeader(code int) {
	if code == http.StatusPartialContent {
		code = http.StatusOK
	}
	s.ResponseWriter.WriteHeader(code)
}
