package fs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/remote"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// faultProxy sits in front of the real registry and spoils blob Range GETs
// while armed: the only fake in these tests.
type faultProxy struct {
	Host string

	target string
	mu     sync.Mutex
	mode   string
	left   int // faults left; -1 is forever
	hits   atomic.Int64
	// stalled receives once per stalled request when its client gives up.
	stalled chan struct{}
	// stalling receives once per request that starts stalling.
	stalling chan struct{}
	done     chan struct{}
}

func startFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{Host: l.Addr().String(), target: target, stalled: make(chan struct{}, 64),
		stalling: make(chan struct{}, 64), done: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode := p.take(r)
		if mode == "" {
			rp.ServeHTTP(w, r)
			return
		}
		p.hits.Add(1)
		p.fault(mode, w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() {
		close(p.done)
		srv.Close()
	})
	return p
}

// arm spoils the next n blob Range GETs (-1: all of them) with mode.
func (p *faultProxy) arm(mode string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.left = mode, n
}

func (p *faultProxy) take(r *http.Request) string {
	if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") || r.Header.Get("Range") == "" {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.left == 0 {
		return ""
	}
	if p.left > 0 {
		p.left--
	}
	return p.mode
}

func (p *faultProxy) fault(mode string, w http.ResponseWriter, r *http.Request) {
	switch mode {
	case "503", "404":
		code := http.StatusServiceUnavailable
		if mode == "404" {
			code = http.StatusNotFound
		}
		http.Error(w, mode, code)
	case "reset":
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			conn.Close()
		}
	case "truncate", "corrupt":
		p.spoilBody(mode, w, r)
	case "stall":
		w.WriteHeader(http.StatusPartialContent)
		http.NewResponseController(w).Flush()
		// Every send also gives way to the proxy's end: a test that stalls
		// more requests than the channels hold (retries, read-ahead and the
		// background fetch all stall) must not leave handlers behind
		// (goleak in TestMain found 13 once).
		select {
		case p.stalling <- struct{}{}:
		case <-p.done:
			return
		}
		select {
		case <-r.Context().Done():
			select {
			case p.stalled <- struct{}{}:
			case <-p.done:
			}
		case <-p.done:
		}
	}
}

// spoilBody fetches the real answer and sends half of it, or all of it
// with one byte flipped.
func (p *faultProxy) spoilBody(mode string, w http.ResponseWriter, r *http.Request) {
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.target+r.URL.RequestURI(), nil)
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	if mode == "truncate" {
		w.Write(body[:len(body)/2])
		return // the server cuts the connection: the body is short
	}
	body[len(body)/2] ^= 0x40
	w.Write(body)
}

// faultLayer is a layer of one multi-chunk file, pushed once per test.
func faultLayer(t *testing.T) (*testenv.Registry, *builtLayer, tentry) {
	reg := testenv.StartRegistry(t)
	file := reg0("file", 3<<20+777, 21)
	l := buildLayer(t, []tentry{file}, estargz.WithChunkSize(512<<10))
	push(t, reg.Host, "faults/app:v1", l)
	return reg, l, file
}

// TestFaults reads through a proxy that spoils responses: transient faults
// heal, permanent ones fail the read with EIO, and no wrong byte is ever
// read.
func TestFaults(t *testing.T) {
	testenv.RequireFUSE(t)
	reg, l, file := faultLayer(t)
	want := expected(t, file, 0, file.size)
	for _, tc := range []struct {
		mode  string
		n     int
		heals bool
	}{
		{"503", 2, true},
		{"reset", 2, true},
		{"truncate", 2, true},
		{"stall", 1, true},
		{"corrupt", 1, true}, // refetched once
		{"corrupt", -1, false},
		{"404", -1, false},
		{"503", -1, false},
	} {
		name := tc.mode + "-transient"
		if !tc.heals {
			name = tc.mode + "-permanent"
		}
		t.Run(name, func(t *testing.T) {
			proxy := startFaultProxy(t, reg.Host)
			f := newFS(t, lfs.WithResolver(testResolver(remote.WithStallTimeout(500*time.Millisecond))))
			mp := mount(t, f, proxy.Host+"/faults/app:v1", l)
			proxy.arm(tc.mode, tc.n)
			got, err := os.ReadFile(filepath.Join(mp, "file"))
			if proxy.hits.Load() == 0 {
				t.Fatal("the proxy injected no fault")
			}
			if tc.heals {
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("read after transient %s: %v (content equal: %v)", tc.mode, err, bytes.Equal(got, want))
				}
				return
			}
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read with permanent %s: %v, want EIO", tc.mode, err)
			}
			// Whatever was read before the error is right, byte for byte.
			proxy.arm("", 0)
			verifyPrefix(t, filepath.Join(mp, "file"), want)
		})
	}
}

// verifyPrefix reads what it can and checks it against want.
func verifyPrefix(t *testing.T, p string, want []byte) {
	t.Helper()
	fh, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	got, err := io.ReadAll(fh)
	if !bytes.Equal(got, want[:len(got)]) {
		t.Fatalf("read wrong bytes (error %v)", err)
	}
}

// TestUnmountCancelsFetch blocks a read on a stalled registry and checks
// that Unmount cancels its fetch.
func TestUnmountCancelsFetch(t *testing.T) {
	testenv.RequireFUSE(t)
	reg, l, _ := faultLayer(t)
	proxy := startFaultProxy(t, reg.Host)
	f := newFS(t, lfs.WithResolver(testResolver(remote.WithStallTimeout(time.Hour))))
	mp := mount(t, f, proxy.Host+"/faults/app:v1", l)
	proxy.arm("stall", -1)
	readErr := make(chan error, 1)
	go func() {
		_, err := os.ReadFile(filepath.Join(mp, "file"))
		readErr <- err
	}()
	<-proxy.stalling
	if err := f.Unmount(context.Background(), mp); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if err := <-readErr; err == nil {
		t.Fatal("read of a stalled file succeeded after unmount")
	}
	<-proxy.stalled // the registry request was abandoned
}

// TestInterruptCancelsFetch kills a reader blocked on a stalled registry:
// the kernel's FUSE interrupt cancels the fetch.
func TestInterruptCancelsFetch(t *testing.T) {
	testenv.RequireFUSE(t)
	reg, l, _ := faultLayer(t)
	proxy := startFaultProxy(t, reg.Host)
	f := newFS(t, lfs.WithResolver(testResolver(remote.WithStallTimeout(time.Hour))))
	mp := mount(t, f, proxy.Host+"/faults/app:v1", l)
	proxy.arm("stall", -1)
	cmd := exec.Command("dd", "if="+filepath.Join(mp, "file"), "of=/dev/null", "bs=4k", "count=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	<-proxy.stalling
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	<-proxy.stalled // the registry request was abandoned
}
