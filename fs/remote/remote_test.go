package remote

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

func TestResolveSize(t *testing.T) {
	f := newFixture(t, 3<<20+17)
	r := NewResolver(testOptions()...)
	b, err := r.Resolve(t.Context(), f.reg.Ref(testRepo+":v1"), f.digest)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != int64(len(f.data)) || b.Digest() != f.digest {
		t.Fatalf("resolved size %d digest %s, want %d %s", b.Size(), b.Digest(), len(f.data), f.digest)
	}
}

func TestResolveUnknownBlobIsNotFound(t *testing.T) {
	f := newFixture(t, 1024)
	r := NewResolver(testOptions()...)
	_, err := r.Resolve(t.Context(), f.reg.Ref(testRepo), digest.FromString("absent"))
	if !errdefs.IsNotFound(err) {
		t.Fatalf("Resolve of an absent blob: %v, want ErrNotFound", err)
	}
}

func TestFetchRandomRanges(t *testing.T) {
	f := newFixture(t, 4<<20+123)
	r := NewResolver(testOptions()...)
	b, err := r.Resolve(t.Context(), f.reg.Ref(testRepo), f.digest)
	if err != nil {
		t.Fatal(err)
	}
	// The resolve's suffix GET counts; once its tail is taken, every range
	// is a request.
	tail := int64(len(b.TakeTail()))
	if tail != DefaultTailBytes {
		t.Fatalf("resolve kept a tail of %d bytes, want %d", tail, DefaultTailBytes)
	}
	size := int64(len(f.data))
	checkRange(t, b, f.data, 0, size)
	checkRange(t, b, f.data, size-1, 1)
	checkRange(t, b, f.data, 0, 1)
	rng := rand.New(rand.NewPCG(7, 7))
	var want int64 = tail + size + 2
	for range 40 {
		off := rng.Int64N(size)
		n := 1 + rng.Int64N(min(size-off, 512<<10))
		checkRange(t, b, f.data, off, n)
		want += n
	}
	if st := b.Stats(); st.BytesFetched != want || st.Requests != 44 || st.Retries != 0 || st.TailHits != 0 {
		t.Fatalf("blob stats %+v, want %d bytes in 44 requests, no retries, no tail hits", st, want)
	}
	if r.Stats() != b.Stats() {
		t.Fatalf("resolver stats %+v differ from its only blob's %+v", r.Stats(), b.Stats())
	}
}

func TestFetchRejectsRangeOutsideBlob(t *testing.T) {
	f := newFixture(t, 1000)
	b, err := NewResolver(testOptions()...).Resolve(t.Context(), f.reg.Ref(testRepo), f.digest)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]int64{{-1, 1}, {0, 1001}, {999, 2}, {1001, 0}} {
		if _, err := b.Fetch(t.Context(), c[0], c[1]); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Fetch(%d, %d): %v, want ErrInvalidArgument", c[0], c[1], err)
		}
	}
}

// TestConcurrencyBound counts requests in flight at the proxy. A request
// leaves the count before its last byte is sent, so the count never exceeds
// the slots the client holds.
func TestConcurrencyBound(t *testing.T) {
	const limit = 3
	f := newFixture(t, 2<<20)
	gate := make(chan struct{})
	var gateOnce sync.Once
	p := newFaultProxy(t, f.reg.Host, func(p *faultProxy, _ int, w http.ResponseWriter, r *http.Request) bool {
		cur := p.inflight.Add(1)
		for old := p.maxInflight.Load(); cur > old && !p.maxInflight.CompareAndSwap(old, cur); old = p.maxInflight.Load() {
		}
		if cur >= limit {
			gateOnce.Do(func() { close(gate) })
		}
		select { // hold the first requests until limit of them overlap
		case <-gate:
		case <-r.Context().Done():
		}
		p.rp.ServeHTTP(&lastByteWriter{ResponseWriter: w, before: func() { p.inflight.Add(-1) }}, r)
		return true
	})
	// No tail: the resolve's suffix GET would wait at the gate alone.
	r := NewResolver(testOptions(WithMaxConcurrency(limit), WithTailBytes(0))...)
	b, err := r.Resolve(t.Context(), p.Host()+"/"+testRepo, f.digest)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			off := int64(i) * 100 << 10
			got, err := fetchAll(t.Context(), b, off, 100<<10)
			if err == nil && !bytes.Equal(got, f.data[off:off+100<<10]) {
				err = errors.New("wrong bytes")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if m := p.maxInflight.Load(); m != limit {
		t.Fatalf("at most %d requests in flight at the proxy, want exactly %d", m, limit)
	}
}

// lastByteWriter calls before just before writing the body's last byte.
type lastByteWriter struct {
	http.ResponseWriter
	left   int64
	before func()
	set    bool
}

func (l *lastByteWriter) Write(b []byte) (int, error) {
	if !l.set {
		l.set, l.left = true, parseLength(l.Header().Get("Content-Length"))
	}
	if int64(len(b)) < l.left || len(b) == 0 {
		l.left -= int64(len(b))
		return l.ResponseWriter.Write(b)
	}
	n, err := l.ResponseWriter.Write(b[:len(b)-1])
	if err != nil {
		return n, err
	}
	http.NewResponseController(l.ResponseWriter).Flush()
	l.before()
	m, err := l.ResponseWriter.Write(b[len(b)-1:])
	l.left = 0
	return n + m, err
}

func parseLength(s string) int64 {
	var n int64
	for _, c := range s {
		n = n*10 + int64(c-'0')
	}
	return n
}
