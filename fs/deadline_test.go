package fs_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/remote"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// trickleProxy sits in front of a registry and, once armed, answers blob
// Range GETs with their headers and then one byte per interval: a registry
// slow enough to be useless but never silent long enough to trip a stall
// timer. Fault injection, the one place a fake belongs.
type trickleProxy struct {
	Host     string
	armed    atomic.Bool
	interval time.Duration
	inFlight atomic.Int64
	done     chan struct{}
}

func startTrickleProxy(t *testing.T, target string, interval time.Duration) *trickleProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &trickleProxy{Host: l.Addr().String(), interval: interval, done: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.armed.Load() || r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			rp.ServeHTTP(w, r)
			return
		}
		p.trickle(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() {
		close(p.done)
		srv.Close()
	})
	return p
}

func (p *trickleProxy) trickle(w http.ResponseWriter, r *http.Request) {
	p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	var first, last int64
	fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &first, &last)
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/*", first, last))
	w.Header().Set("Content-Length", fmt.Sprint(last-first+1))
	w.WriteHeader(http.StatusPartialContent)
	rc := http.NewResponseController(w)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		rc.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-p.done:
			return
		case <-t.C:
		}
		if _, err := w.Write([]byte{0}); err != nil {
			return
		}
	}
}

// TestSlowRegistryNeitherHoldsReadsNorStarvesOthers: two registries, one
// trickling a byte a second (under the stall timeout, so no attempt is
// ever abandoned). More reads of its layer than it has request slots fail
// at the read deadline with EIO, and meanwhile reads of the other
// registry's layer, which has slots of its own, go through.
func TestSlowRegistryNeitherHoldsReadsNorStarvesOthers(t *testing.T) {
	testenv.RequireFUSE(t)
	fast, slowReg := testenv.StartRegistry(t), testenv.StartRegistry(t)
	slow := startTrickleProxy(t, slowReg.Host, time.Second)
	var es []tentry
	for i := range 12 {
		es = append(es, reg(fmt.Sprintf("f%02d", i), 64<<10, uint64(200+i)))
	}
	l := buildLayer(t, es)
	push(t, fast.Host, "deadline/app:v1", l)
	push(t, slowReg.Host, "deadline/app:v1", l)

	const slots, deadline = 4, 3 * time.Second
	resolver := testResolver(remote.WithMaxConcurrency(slots), remote.WithStallTimeout(2*time.Second))
	// Separate caches: the layers are the same, and a shared cache would
	// serve the slow one's reads from the fast one's bytes. No read-ahead on
	// the slow one: a read's tail would claim the next files, and the reads
	// of those would wait for its one request instead of queueing for slots
	// of their own.
	slowFS := newFS(t, lfs.WithResolver(resolver), lfs.WithReadTimeout(deadline), lfs.WithReadAhead(0))
	fastFS := newFS(t, lfs.WithResolver(resolver), lfs.WithReadTimeout(deadline))
	slowMP := mount(t, slowFS, slow.Host+"/deadline/app:v1", l)
	fastMP := mount(t, fastFS, fast.Host+"/deadline/app:v1", l)
	slow.armed.Store(true)

	start := time.Now()
	var wg sync.WaitGroup
	slowErrs := make([]error, 2*slots)
	for i := range slowErrs {
		wg.Go(func() {
			_, slowErrs[i] = os.ReadFile(filepath.Join(slowMP, es[i].name))
		})
	}
	waitFor(t, "the slow registry's slots to fill", func() bool { return slow.inFlight.Load() >= slots })
	for _, e := range es[:4] {
		checkFile(t, fastMP, e)
	}
	fastTook := time.Since(start)
	if slowDone := waitGroupDone(&wg); isClosed(slowDone) {
		t.Fatalf("the slow registry's reads ended before the fast registry's reads did")
	}
	wg.Wait()
	slowTook := time.Since(start)
	for i, err := range slowErrs {
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("read %d from the trickling registry: %v, want EIO", i, err)
		}
	}
	t.Logf("fast registry's 4 reads done after %v; the %d reads of the trickling one failed after %v (deadline %v)",
		fastTook.Round(time.Millisecond), len(slowErrs), slowTook.Round(time.Millisecond), deadline)
}

func waitGroupDone(wg *sync.WaitGroup) chan struct{} {
	c := make(chan struct{})
	go func() {
		wg.Wait()
		close(c)
	}()
	return c
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
