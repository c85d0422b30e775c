package remote

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/opencontainers/go-digest"
)

// mirror404 is a registry mirror that has no blobs; it records what it was
// asked for.
type mirror404 struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // "METHOD path ns=NS"
}

func newMirror404(t *testing.T) *mirror404 {
	m := &mirror404{}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.seen = append(m.seen, r.Method+" "+r.URL.Path+" ns="+r.URL.Query().Get("ns"))
		m.mu.Unlock()
		if r.URL.Path == "/v2/" {
			return // 200: no authentication
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *mirror404) host() string { return strings.TrimPrefix(m.srv.URL, "http://") }

func (m *mirror404) requests() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.seen...)
}

// TestMirrorsFallThrough lists a mirror that is down and one that lacks the
// blob before the registry itself: resolution reaches the registry, after
// asking the live mirror with the upstream named in "ns".
func TestMirrorsFallThrough(t *testing.T) {
	f := newFixture(t, 1<<20)
	m := newMirror404(t)
	down := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	dir := t.TempDir()
	writeHosts(t, dir, f.reg.Host, fmt.Sprintf(`server = "http://%s"

[host."http://%s"]
  capabilities = ["pull", "resolve"]

[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, f.reg.Host, down, m.host()))
	r := NewResolver(testOptions(WithHostsDir(dir))...)
	b, err := r.Resolve(t.Context(), f.reg.Ref(testRepo+":v1"), f.digest)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != int64(len(f.data)) {
		t.Fatalf("size %d, want %d", b.Size(), len(f.data))
	}
	// The mirror's 404 to the resolve's suffix GET is final there: no HEAD
	// follows it, and the next host is tried.
	probe := fmt.Sprintf("GET /v2/%s/blobs/%s ns=%s", testRepo, f.digest, f.reg.Host)
	if got := m.requests(); !contains(got, probe) || blobRequests(got) != 1 {
		t.Fatalf("mirror saw %q, want %q and no other blob request", got, probe)
	}
	checkRange(t, b, f.data, 1000, 5000)
	if got := m.requests(); blobRequests(got) != 1 {
		t.Fatalf("fetch went to the mirror that lacks the blob: %q", got)
	}
}

func blobRequests(reqs []string) int {
	n := 0
	for _, r := range reqs {
		if strings.Contains(r, "/blobs/") {
			n++
		}
	}
	return n
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestPlainHTTPFromHostsToml resolves a registry name that does not exist
// through hosts.toml's "server", a plain-HTTP address.
func TestPlainHTTPFromHostsToml(t *testing.T) {
	f := newFixture(t, 256<<10)
	dir := t.TempDir()
	writeHosts(t, dir, "lazysnap.invalid", fmt.Sprintf(`server = "http://%s"
`, f.reg.Host))
	r := NewResolver(testOptions(WithHostsDir(dir))...)
	b, err := r.Resolve(t.Context(), "lazysnap.invalid/"+testRepo+":v1", f.digest)
	if err != nil {
		t.Fatal(err)
	}
	checkRange(t, b, f.data, 0, b.Size())
}

// TestNoHostAnswersIsUnavailable points the only host at a closed port.
func TestNoHostAnswersIsUnavailable(t *testing.T) {
	dir := t.TempDir()
	writeHosts(t, dir, "lazysnap.invalid", fmt.Sprintf(`server = "http://127.0.0.1:%d"
`, testenv.FreePort(t)))
	r := NewResolver(testOptions(WithHostsDir(dir), WithMaxRetries(1))...)
	_, err := r.Resolve(t.Context(), "lazysnap.invalid/x/y:v1", digest.Digest("sha256:"+strings.Repeat("0", 64)))
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("Resolve with no live host: %v, want ErrUnavailable", err)
	}
}

// TestEveryHostLacksBlobIsNotFound: a mirror and the registry both 404.
func TestEveryHostLacksBlobIsNotFound(t *testing.T) {
	f := newFixture(t, 1024)
	m := newMirror404(t)
	dir := t.TempDir()
	writeHosts(t, dir, f.reg.Host, fmt.Sprintf(`[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, m.host()))
	r := NewResolver(testOptions(WithHostsDir(dir))...)
	_, err := r.Resolve(t.Context(), f.reg.Ref(testRepo), digest.Digest("sha256:"+strings.Repeat("1", 64)))
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), m.host()) {
		t.Fatalf("Resolve of an absent blob: %v, want ErrNotFound naming the mirror too", err)
	}
}
