package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
)

// blobStorage serves data at any path, as a blob store a registry
// redirects to, and records whether a request carried Authorization.
type blobStorage struct {
	srv        *httptest.Server
	data       []byte
	gets       atomic.Int32
	authorized atomic.Int32
}

func newBlobStorage(t *testing.T, tlsServer bool, data []byte) *blobStorage {
	s := &blobStorage{data: data}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.gets.Add(1)
		if r.Header.Get("Authorization") != "" {
			s.authorized.Add(1)
		}
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(s.data))
	})
	if tlsServer {
		s.srv = httptest.NewTLSServer(h)
	} else {
		s.srv = httptest.NewServer(h)
	}
	t.Cleanup(s.srv.Close)
	return s
}

// redirectingRegistry answers the registry API's ping and redirects every
// blob request to location (a function of the request). With user set, it
// requires HTTP basic authentication, as the real registry's htpasswd does.
type redirectingRegistry struct {
	srv        *httptest.Server
	user, pass string
	location   func(r *http.Request) string
	blobReqs   atomic.Int32
}

func newRedirectingRegistry(t *testing.T, tlsServer bool, location func(r *http.Request) string) *redirectingRegistry {
	reg := &redirectingRegistry{location: location}
	if tlsServer {
		reg.srv = httptest.NewTLSServer(reg)
	} else {
		reg.srv = httptest.NewServer(reg)
	}
	t.Cleanup(reg.srv.Close)
	return reg
}

func (reg *redirectingRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, p, _ := r.BasicAuth(); reg.user != "" && (u != reg.user || p != reg.pass) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, "credentials required", http.StatusUnauthorized)
		return
	}
	if strings.Contains(r.URL.Path, "/blobs/") {
		reg.blobReqs.Add(1)
		http.Redirect(w, r, reg.location(r), http.StatusTemporaryRedirect)
		return
	}
	w.WriteHeader(http.StatusOK) // the /v2/ ping
}

func (reg *redirectingRegistry) host() string {
	return strings.TrimPrefix(strings.TrimPrefix(reg.srv.URL, "https://"), "http://")
}

// resolveRedirected resolves the blob of data at reg with retries enabled,
// trusting the test servers' certificate.
func resolveRedirected(t *testing.T, reg *redirectingRegistry, data []byte, extra ...Option) (Blob, error) {
	t.Helper()
	tr := reg.srv.Client().Transport.(*http.Transport).Clone()
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{}
	}
	opts := testOptions(append([]Option{WithTransport(tr), WithStallTimeout(2 * time.Second)}, extra...)...)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	return NewResolver(opts...).Resolve(ctx, reg.host()+"/"+testRepo, digest.FromBytes(data))
}

// assertRefused checks that err is a final refusal naming target, and
// that it was not retried.
func assertRefused(t *testing.T, err error, reg *redirectingRegistry, target string) {
	t.Helper()
	if err == nil {
		t.Fatalf("redirect to %s was followed", target)
	}
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), target) {
		t.Fatalf("redirect to %s: %v; want ErrPermissionDenied naming the target", target, err)
	}
	if n := reg.blobReqs.Load(); n != 1 {
		t.Errorf("registry saw %d blob requests; a refused redirect must not be retried", n)
	}
}

func TestRedirectToMetadataRefused(t *testing.T) {
	data := []byte("blob")
	reg := newRedirectingRegistry(t, false, func(*http.Request) string {
		return "http://169.254.169.254/latest/meta-data/iam/security-credentials/?sig=secret"
	})
	_, err := resolveRedirected(t, reg, data)
	assertRefused(t, err, reg, "169.254.169.254")
	if strings.Contains(err.Error(), "sig=secret") {
		t.Errorf("error %q quotes the redirect's query", err)
	}
}

// TestRedirectToLinkLocalNameRefused redirects to names that resolve to
// refused addresses, with a resolver the test controls.
func TestRedirectToLinkLocalNameRefused(t *testing.T) {
	for _, tc := range []struct{ name, addr string }{
		{"storage-v4.test", "169.254.10.1"},
		{"storage-v6.test", "fe80::1"},
		{"metadata-v6.test", "fd00:ec2::254"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte("blob")
			reg := newRedirectingRegistry(t, false, func(*http.Request) string { return "http://" + tc.name + "/b" })
			fakeDNS := func(o *options) {
				o.lookupIP = func(_ context.Context, host string) ([]netip.Addr, error) {
					if host != tc.name {
						t.Errorf("resolved %q; want %q", host, tc.name)
					}
					return []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr(tc.addr)}, nil
				}
			}
			_, err := resolveRedirected(t, reg, data, fakeDNS)
			assertRefused(t, err, reg, tc.name)
		})
	}
}

func TestRedirectToMetadataNameRefused(t *testing.T) {
	data := []byte("blob")
	reg := newRedirectingRegistry(t, false, func(*http.Request) string {
		return "http://metadata.google.internal/computeMetadata/v1/"
	})
	_, err := resolveRedirected(t, reg, data)
	assertRefused(t, err, reg, "metadata.google.internal")
}

func TestRedirectHTTPSDowngradeRefused(t *testing.T) {
	data := randomBytes(4096, 7)
	storage := newBlobStorage(t, false, data)
	reg := newRedirectingRegistry(t, true, func(*http.Request) string { return storage.srv.URL + "/blob" })
	_, err := resolveRedirected(t, reg, data)
	assertRefused(t, err, reg, storage.srv.URL)
	if n := storage.gets.Load(); n != 0 {
		t.Errorf("plain HTTP storage got %d requests after a redirect from https", n)
	}
}

func TestRedirectLoopStops(t *testing.T) {
	data := []byte("blob")
	var reg *redirectingRegistry
	reg = newRedirectingRegistry(t, false, func(r *http.Request) string { return reg.srv.URL + r.URL.Path + "x" })
	_, err := resolveRedirected(t, reg, data)
	if !errdefs.IsPermissionDenied(err) {
		t.Fatalf("endless redirects: %v; want ErrPermissionDenied", err)
	}
	if n := reg.blobReqs.Load(); n > maxRedirects {
		t.Errorf("registry saw %d blob requests; want at most %d, with no retry", n, maxRedirects)
	}
}

// TestRedirectToStorageFollowed checks that the redirects registries with
// object storage send still work: to another port of the same loopback
// address over plain HTTP, and https to https; for the resolve's suffix
// GET, which brings the whole (small) blob as its tail, and, with no tail,
// for a HEAD and a fetch's Range GET.
func TestRedirectToStorageFollowed(t *testing.T) {
	for _, tlsServers := range []bool{false, true} {
		for _, tail := range []int64{DefaultTailBytes, 0} {
			t.Run(fmt.Sprintf("%s/tail=%d", map[bool]string{false: "http", true: "https"}[tlsServers], tail), func(t *testing.T) {
				data := randomBytes(64<<10, 3)
				storage := newBlobStorage(t, tlsServers, data)
				reg := newRedirectingRegistry(t, tlsServers, func(*http.Request) string { return storage.srv.URL + "/blob" })
				b, err := resolveRedirected(t, reg, data, WithTailBytes(tail))
				if err != nil {
					t.Fatal(err)
				}
				if b.Size() != int64(len(data)) {
					t.Fatalf("size %d, want %d", b.Size(), len(data))
				}
				checkRange(t, b, data, 1000, 20_000)
				// The suffix GET alone reaches storage, or the fetch alone
				// (the HEAD too, redirected by this registry).
				if n := storage.gets.Load(); n != map[bool]int32{true: 1, false: 2}[tail > 0] {
					t.Fatalf("storage got %d requests", n)
				}
			})
		}
	}
}

// TestRedirectDropsAuthorization redirects the blob requests of a registry
// requiring credentials to storage on another port of the same address:
// Go's client would copy the Authorization go-containerregistry set there.
// With a tail, the suffix GET is the only request that reaches storage;
// without, the HEAD and the fetch's Range GET.
func TestRedirectDropsAuthorization(t *testing.T) {
	for _, tail := range []int64{DefaultTailBytes, 0} {
		t.Run(fmt.Sprintf("tail=%d", tail), func(t *testing.T) {
			data := randomBytes(8192, 5)
			storage := newBlobStorage(t, false, data)
			reg := newRedirectingRegistry(t, false, func(*http.Request) string { return storage.srv.URL + "/blob" })
			reg.user, reg.pass = "alice", "s3cret"
			keys := staticKeychain{reg.host(): &authn.Basic{Username: reg.user, Password: reg.pass}}
			b, err := resolveRedirected(t, reg, data, WithKeychain(keys), WithTailBytes(tail))
			if err != nil {
				t.Fatal(err)
			}
			checkRange(t, b, data, 0, 4096)
			if n := reg.blobReqs.Load(); n == 0 {
				t.Fatal("the registry saw no blob request")
			}
			if got, n := storage.authorized.Load(), storage.gets.Load(); got != 0 || n == 0 {
				t.Errorf("storage on another port got Authorization on %d of %d requests; want none", got, n)
			}
		})
	}
}

func TestRefusedAddr(t *testing.T) {
	for addr, refused := range map[string]bool{
		"169.254.169.254":        true,
		"169.254.0.1":            true,
		"fe80::1":                true,
		"fd00:ec2::254":          true,
		"100.100.100.200":        true,
		"0.0.0.0":                true,
		"::":                     true,
		"224.0.0.1":              true,
		"ff02::1":                true,
		"::ffff:169.254.169.254": true,
		"127.0.0.1":              false,
		"::1":                    false,
		"10.1.2.3":               false,
		"192.168.1.1":            false,
		"fd00:ec2::253":          false,
		"100.100.100.201":        false,
		"203.0.113.7":            false,
		"2001:db8::1":            false,
	} {
		if got := refusedAddr(netip.MustParseAddr(addr)) != ""; got != refused {
			t.Errorf("refusedAddr(%s) refuses: %v; want %v", addr, got, refused)
		}
	}
}
