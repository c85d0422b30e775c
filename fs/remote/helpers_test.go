package remote

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/opencontainers/go-digest"
)

const testRepo = "test/blob"

// fixture is a real registry holding one random blob.
type fixture struct {
	reg    *testenv.Registry
	data   []byte
	digest digest.Digest
}

func newFixture(t testing.TB, size int) *fixture {
	t.Helper()
	reg := testenv.StartRegistry(t)
	data := randomBytes(size, 1)
	return &fixture{reg: reg, data: data, digest: pushBlob(t, reg.Host, data)}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// pushBlob uploads data as a layer blob to host's testRepo.
func pushBlob(t testing.TB, host string, data []byte) digest.Digest {
	t.Helper()
	repo, err := name.NewRepository(host+"/"+testRepo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	layer := static.NewLayer(data, types.OCILayer)
	if err := remote.WriteLayer(repo, layer, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("pushing blob: %v", err)
	}
	return digest.FromBytes(data)
}

// fetchAll reads [off, off+n) of b.
func fetchAll(ctx context.Context, b Blob, off, n int64) ([]byte, error) {
	rc, err := b.Fetch(ctx, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func checkRange(t *testing.T, b Blob, want []byte, off, n int64) {
	t.Helper()
	got, err := fetchAll(t.Context(), b, off, n)
	if err != nil {
		t.Fatalf("Fetch(%d, %d): %v", off, n, err)
	}
	if !bytes.Equal(got, want[off:off+n]) {
		t.Fatalf("Fetch(%d, %d): got %d bytes that differ from the blob's", off, n, len(got))
	}
}

// writeHosts writes dir/host/hosts.toml.
func writeHosts(t *testing.T, dir, host, toml string) {
	t.Helper()
	p := filepath.Join(dir, host)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
}

// testOptions keep retries quick and hosts.toml out of the host's /etc.
func testOptions(extra ...Option) []Option {
	return append([]Option{WithHostsDir(""), WithBackoff(time.Millisecond, 10*time.Millisecond)}, extra...)
}

// fault may answer the n-th (0-based) blob GET itself; it returns false to
// let the proxy forward the request to the registry.
type fault func(p *faultProxy, n int, w http.ResponseWriter, r *http.Request) bool

// faultProxy is an HTTP proxy in front of the real registry that records
// blob GETs and injects faults into them.
type faultProxy struct {
	srv   *httptest.Server
	rp    *httputil.ReverseProxy
	fault fault

	gets        atomic.Int32
	heads       atomic.Int32 // blob HEADs, passed through
	mu          sync.Mutex
	ranges      []string // the Range header of each blob GET
	inflight    atomic.Int32
	maxInflight atomic.Int32
}

func newFaultProxy(t *testing.T, upstream string, f fault) *faultProxy {
	t.Helper()
	u := &url.URL{Scheme: "http", Host: upstream}
	p := &faultProxy{rp: httputil.NewSingleHostReverseProxy(u), fault: f}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	return p
}

// Host is the proxy's "127.0.0.1:PORT".
func (p *faultProxy) Host() string { return strings.TrimPrefix(p.srv.URL, "http://") }

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/blobs/") {
		p.heads.Add(1)
	}
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
		n := int(p.gets.Add(1)) - 1
		p.mu.Lock()
		p.ranges = append(p.ranges, r.Header.Get("Range"))
		p.mu.Unlock()
		if p.fault != nil && p.fault(p, n, w, r) {
			return
		}
	}
	p.rp.ServeHTTP(w, r)
}

func (p *faultProxy) rangeHeaders() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ranges...)
}

// cutWriter passes limit body bytes through, flushes them, then calls cut,
// which must not return normally (it panics with http.ErrAbortHandler).
type cutWriter struct {
	http.ResponseWriter
	limit int
	cut   func()
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if len(b) < c.limit {
		c.limit -= len(b)
		return c.ResponseWriter.Write(b)
	}
	_, _ = c.ResponseWriter.Write(b[:c.limit])
	http.NewResponseController(c.ResponseWriter).Flush()
	c.cut()
	panic(http.ErrAbortHandler)
}

func (c *cutWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// onFirst applies f to the first blob GET only.
func onFirst(f func(p *faultProxy, w http.ResponseWriter, r *http.Request)) fault {
	return func(p *faultProxy, n int, w http.ResponseWriter, r *http.Request) bool {
		if n != 0 {
			return false
		}
		f(p, w, r)
		return true
	}
}

// truncate serves the response but breaks the connection after limit bytes.
func truncate(limit int) func(p *faultProxy, w http.ResponseWriter, r *http.Request) {
	return func(p *faultProxy, w http.ResponseWriter, r *http.Request) {
		p.rp.ServeHTTP(&cutWriter{ResponseWriter: w, limit: limit, cut: func() {}}, r)
	}
}

// stallAfter serves limit bytes and then sends nothing until the client
// gives up; started is closed when the stall begins.
func stallAfter(limit int, started chan<- struct{}) func(p *faultProxy, w http.ResponseWriter, r *http.Request) {
	var once sync.Once
	return func(p *faultProxy, w http.ResponseWriter, r *http.Request) {
		cut := func() {
			once.Do(func() { close(started) })
			<-r.Context().Done()
		}
		p.rp.ServeHTTP(&cutWriter{ResponseWriter: w, limit: limit, cut: cut}, r)
	}
}

// reset closes the connection with a TCP RST before answering.
func reset(_ *faultProxy, w http.ResponseWriter, _ *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

// status answers code to blob GETs whose index n satisfies when.
func status(code int, when func(n int) bool) fault {
	return func(_ *faultProxy, n int, w http.ResponseWriter, _ *http.Request) bool {
		if !when(n) {
			return false
		}
		http.Error(w, http.StatusText(code), code)
		return true
	}
}

// staticKeychain hands out one authenticator per registry name.
type staticKeychain map[string]authn.Authenticator

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if a, ok := k[r.RegistryStr()]; ok {
		return a, nil
	}
	return authn.Anonymous, nil
}
