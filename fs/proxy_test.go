package fs_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"golang.org/x/time/rate"
)

// rangeProxy sits in front of the real registry and records every blob
// request in order (start and end events), so tests can count requests and
// tell what ran at the same time. It can share one throttled link between
// all responses, and hold requests back until released (fault injection).
type rangeProxy struct {
	Host string

	link *rate.Limiter // nil: unthrottled

	mu       sync.Mutex
	events   []proxyEvent
	nextID   int
	hold     func(blobRange) bool
	held     chan struct{} // closed when the first request is held
	release  chan struct{}
	released bool
}

// blobRange is the byte range a blob request asked for; end is exclusive.
type blobRange struct{ start, end int64 }

func (r blobRange) len() int64 { return r.end - r.start }

type proxyEvent struct {
	id    int
	begin bool // else the response is complete
	r     blobRange
}

// startRangeProxy proxies to target, throttled to bytesPerSec over every
// response together when it is not 0.
func startRangeProxy(t testing.TB, target string, bytesPerSec int) *rangeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rangeProxy{Host: ln.Addr().String(), held: make(chan struct{}), release: make(chan struct{})}
	if bytesPerSec > 0 {
		p.link = rate.NewLimiter(rate.Limit(bytesPerSec), 32<<10)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.FlushInterval = -1
	srv := &http.Server{Handler: p.wrap(rp)}
	go srv.Serve(ln)
	t.Cleanup(func() {
		p.Release()
		srv.Close()
	})
	return p
}

// Hold makes requests for which match is true wait, before any byte of
// their response, until Release.
func (p *rangeProxy) Hold(match func(blobRange) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = match
}

// Held is closed once a request is being held.
func (p *rangeProxy) Held() <-chan struct{} { return p.held }

// Release lets held requests (and later matching ones) through.
func (p *rangeProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.released {
		p.released = true
		close(p.release)
	}
}

// Events returns the events recorded so far.
func (p *rangeProxy) Events() []proxyEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxyEvent(nil), p.events...)
}

// Requests returns the blob requests started so far, in order.
func (p *rangeProxy) Requests() []blobRange {
	var out []blobRange
	for _, e := range p.Events() {
		if e.begin {
			out = append(out, e.r)
		}
	}
	return out
}

func (p *rangeProxy) begin(r blobRange) (id int, hold bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id = p.nextID
	p.nextID++
	p.events = append(p.events, proxyEvent{id: id, begin: true, r: r})
	hold = p.hold != nil && p.hold(r) && !p.released
	if hold {
		select {
		case <-p.held:
		default:
			close(p.held)
		}
	}
	return id, hold
}

func (p *rangeProxy) end(id int, r blobRange) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, proxyEvent{id: id, r: r})
}

func (p *rangeProxy) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") || r.Header.Get("Range") == "" {
			next.ServeHTTP(w, r)
			return
		}
		br, err := parseRange(r.Header.Get("Range"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, hold := p.begin(br)
		defer p.end(id, br)
		if hold {
			select {
			case <-p.release:
			case <-r.Context().Done():
				return
			}
		}
		next.ServeHTTP(&linkWriter{ResponseWriter: w, link: p.link, ctx: r.Context()}, r)
	})
}

// parseRange reads "bytes=A-B". The proxy answers anything else with 400,
// the suffix GET ("bytes=-N") of fs/remote's resolve included: that falls
// back to a HEAD, and these tests' mounts read the footer and the TOC with
// Range requests of their own, as the counts they check assume.
func parseRange(h string) (blobRange, error) {
	var r blobRange
	if _, err := fmt.Sscanf(h, "bytes=%d-%d", &r.start, &r.end); err != nil {
		return r, fmt.Errorf("range %q: %w", h, err)
	}
	r.end++
	return r, nil
}

// linkWriter sends bodies through the shared link.
type linkWriter struct {
	http.ResponseWriter
	link *rate.Limiter
	ctx  context.Context
}

func (w *linkWriter) Write(p []byte) (int, error) {
	sent := 0
	for len(p) > 0 {
		n := min(len(p), 32<<10)
		if w.link != nil {
			if err := w.link.WaitN(w.ctx, n); err != nil {
				return sent, errors.Join(err, http.ErrAbortHandler)
			}
		}
		m, err := w.ResponseWriter.Write(p[:n])
		sent += m
		if err != nil {
			return sent, err
		}
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[n:]
	}
	return sent, nil
}
