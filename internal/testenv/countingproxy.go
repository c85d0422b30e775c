package testenv

import (
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// CountingProxy is a reverse proxy in front of a registry that counts the
// blob bytes it serves, so a test can tell how much of an image was read.
type CountingProxy struct {
	// Host is "127.0.0.1:PORT"; pull through it with refs naming this host.
	Host string

	blobBytes atomic.Int64
	blobGets  atomic.Int64
	rangeGets atomic.Int64

	mu   sync.Mutex
	gets []BlobGet // in arrival order
}

// BlobGet is one blob GET the proxy forwarded.
type BlobGet struct {
	Blob  string // the digest in the URL
	Range string // the Range header, "" for none
	// Start is when the request arrived; End, when its response was
	// written (zero while it is being served).
	Start, End time.Time
	Bytes      int64 // body bytes served
}

// StartCountingProxy proxies to target ("HOST:PORT", plain HTTP) until the
// test ends.
func StartCountingProxy(t testing.TB, target string) *CountingProxy {
	t.Helper()
	p := &CountingProxy{}
	p.Host = serveProxy(t, "counting proxy", target, p.wrap)
	return p
}

// BlobBytes is the number of blob body bytes served since the last Reset.
func (p *CountingProxy) BlobBytes() int64 { return p.blobBytes.Load() }

// BlobGets is the number of blob GETs (with or without Range).
func (p *CountingProxy) BlobGets() int64 { return p.blobGets.Load() }

// RangeGets is the number of blob GETs carrying a Range header.
func (p *CountingProxy) RangeGets() int64 { return p.rangeGets.Load() }

// Gets returns every blob GET since the last Reset, in arrival order.
func (p *CountingProxy) Gets() []BlobGet {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.gets)
}

// Reset zeroes the counters and forgets the recorded GETs.
func (p *CountingProxy) Reset() {
	p.mu.Lock()
	p.gets = nil
	p.mu.Unlock()
	p.blobBytes.Store(0)
	p.blobGets.Store(0)
	p.rangeGets.Store(0)
}

func (p *CountingProxy) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, blob, isBlob := strings.Cut(r.URL.Path, "/blobs/")
		if r.Method != http.MethodGet || !isBlob {
			next.ServeHTTP(w, r)
			return
		}
		p.mu.Lock()
		i := len(p.gets)
		p.gets = append(p.gets, BlobGet{Blob: blob, Range: r.Header.Get("Range"), Start: time.Now()})
		p.mu.Unlock()
		p.blobGets.Add(1)
		if r.Header.Get("Range") != "" {
			p.rangeGets.Add(1)
		}
		cw := &countingWriter{ResponseWriter: w, n: &p.blobBytes}
		next.ServeHTTP(cw, r)
		p.mu.Lock()
		if i < len(p.gets) { // else a Reset came in between
			p.gets[i].End, p.gets[i].Bytes = time.Now(), cw.own
		}
		p.mu.Unlock()
	})
}

// countingWriter adds the body bytes it writes to n, and counts its own.
type countingWriter struct {
	http.ResponseWriter
	n   *atomic.Int64
	own int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	c.own += int64(n)
	return n, err
}

// Flush lets the reverse proxy stream large blobs.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// serveProxy serves a reverse proxy to target ("HOST:PORT", plain HTTP),
// its handler wrapped by wrap, on a loopback port until the test ends, and
// returns its HOST:PORT.
func serveProxy(t testing.TB, name, target string, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening for %s: %v", name, err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	srv := &http.Server{Handler: wrap(rp)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Logf("%s: %v", name, err)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return l.Addr().String()
}
