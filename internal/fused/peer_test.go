package fused

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/unixsock"
	"github.com/lazysnap/lazysnap/internal/unixsock/unixsocktest"
)

func TestMain(m *testing.M) { unixsocktest.Main(m) }

// TestUntrustedPeerForbidden loosens the socket's mode to 0666, as an
// operator might by mistake: another user then connects, but the peer check
// answers 403, to /healthz as to mounts, credentials and profiles.
func TestUntrustedPeerForbidden(t *testing.T) {
	testenv.RequireRoot(t)
	sock := filepath.Join(t.TempDir(), "fused.sock")
	l, err := unixsock.Listen(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(&recordingFS{})
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	unixsocktest.OpenPath(t, filepath.Dir(sock))
	pr := unixsocktest.NewProber(t)
	if got := pr.Probe(unixsocktest.Nobody, sock, unixsocktest.HTTP); got != "dial EACCES" {
		t.Errorf("uid %d through the 0600 socket: %q, want dial EACCES", unixsocktest.Nobody, got)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := pr.Probe(unixsocktest.Nobody, sock, unixsocktest.HTTP); got != "http 403" {
		t.Errorf("uid %d through a 0666 socket: %q, want http 403", unixsocktest.Nobody, got)
	}
	if got := pr.Probe(0, sock, unixsocktest.HTTP); got != "http 200" {
		t.Errorf("root: %q, want http 200", got)
	}
}

// TestUnknownPeerForbidden: a request whose connection has no peer
// credentials (not a unix socket) is refused too.
func TestUnknownPeerForbidden(t *testing.T) {
	rec := httptest.NewRecorder()
	NewHTTPServer(&recordingFS{}).Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/credentials", nil))
	if rec.Code != http.StatusForbidden {
		t.Fatalf("request without a peer: %d, want 403", rec.Code)
	}
}
