package remote

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// tokenRegistry fronts the real registry with bearer-token auth: /token
// issues tokens for the right basic credentials, everything else needs a
// live token or gets a 401 challenge. expire invalidates live tokens.
type tokenRegistry struct {
	srv      *httptest.Server
	rp       *httputil.ReverseProxy
	user     string
	password string

	issued atomic.Int32
	mu     sync.Mutex
	live   map[string]bool
}

func newTokenRegistry(t *testing.T, upstream string) *tokenRegistry {
	tr := &tokenRegistry{
		rp:   httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream}),
		user: "alice", password: "s3cret",
		live: map[string]bool{},
	}
	tr.srv = httptest.NewServer(tr)
	t.Cleanup(tr.srv.Close)
	return tr
}

func (tr *tokenRegistry) host() string { return strings.TrimPrefix(tr.srv.URL, "http://") }

func (tr *tokenRegistry) expire() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	clear(tr.live)
}

func (tr *tokenRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		tr.issue(w, r)
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tr.mu.Lock()
	ok := tr.live[tok]
	tr.mu.Unlock()
	if !ok {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test"`, tr.srv.URL))
		http.Error(w, "token required", http.StatusUnauthorized)
		return
	}
	r.Header.Del("Authorization")
	tr.rp.ServeHTTP(w, r)
}

func (tr *tokenRegistry) issue(w http.ResponseWriter, r *http.Request) {
	u, p, ok := r.BasicAuth()
	if !ok || u != tr.user || p != tr.password {
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	tok := fmt.Sprintf("token-%d", tr.issued.Add(1))
	tr.mu.Lock()
	tr.live[tok] = true
	tr.mu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300})
}

func TestBearerTokenAuthAndRefresh(t *testing.T) {
	fx := newFixture(t, 1<<20)
	tr := newTokenRegistry(t, fx.reg.Host)
	keys := staticKeychain{tr.host(): &authn.Basic{Username: tr.user, Password: tr.password}}
	r := NewResolver(testOptions(WithKeychain(keys))...)
	b, err := r.Resolve(t.Context(), tr.host()+"/"+testRepo, fx.digest)
	if err != nil {
		t.Fatal(err)
	}
	checkRange(t, b, fx.data, 100, 200_000)
	if got := tr.issued.Load(); got != 1 {
		t.Fatalf("%d tokens issued before expiry, want 1", got)
	}
	tr.expire()
	checkRange(t, b, fx.data, 300_000, 200_000)
	if got := tr.issued.Load(); got != 2 {
		t.Fatalf("%d tokens issued after expiry, want 2", got)
	}
}

func TestBearerTokenWrongCredentials(t *testing.T) {
	fx := newFixture(t, 1024)
	tr := newTokenRegistry(t, fx.reg.Host)
	keys := staticKeychain{tr.host(): &authn.Basic{Username: tr.user, Password: "wrong"}}
	_, err := NewResolver(testOptions(WithKeychain(keys))...).Resolve(t.Context(), tr.host()+"/"+testRepo, fx.digest)
	if !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), tr.host()) {
		t.Fatalf("Resolve with wrong credentials: %v, want ErrUnauthenticated naming the host", err)
	}
}

// repoKeychain answers only for exact repositories ("host/repository"), as
// the CRI credential store does.
type repoKeychain map[string]authn.Authenticator

func (k repoKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if repo, ok := r.(name.Repository); ok {
		if a, ok := k[repo.RegistryStr()+"/"+repo.RepositoryStr()]; ok {
			return a, nil
		}
	}
	return authn.Anonymous, nil
}

// TestCredentialsPerRepository checks that the keychain is asked for the
// repository, by every hosts.toml entry for the registry's own host, and
// not for the bare registry.
func TestCredentialsPerRepository(t *testing.T) {
	fx := newFixture(t, 64<<10)
	tr := newTokenRegistry(t, fx.reg.Host)
	dir := t.TempDir()
	writeHosts(t, dir, tr.host(), fmt.Sprintf("server = \"http://%[1]s\"\n[host.\"http://%[1]s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", tr.host()))
	keys := repoKeychain{tr.host() + "/" + testRepo: &authn.Basic{Username: tr.user, Password: tr.password}}
	r := NewResolver(testOptions(WithHostsDir(dir), WithKeychain(keys), WithMaxRetries(0))...)
	b, err := r.Resolve(t.Context(), tr.host()+"/"+testRepo, fx.digest)
	if err != nil {
		t.Fatal(err)
	}
	checkRange(t, b, fx.data, 0, 4096)
}
