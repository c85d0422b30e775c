package install

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/internal/fused"
)

// idleFS is a fused file system with nothing mounted: the health check
// only asks /healthz.
type idleFS struct{}

func (idleFS) Mount(context.Context, string, map[string]string) error { return nil }
func (idleFS) Check(context.Context, string, map[string]string) error { return nil }
func (idleFS) Unmount(context.Context, string) error                  { return nil }

// serveFused serves fused's real HTTP API on socket until the returned stop
// is called, the way a killed fused leaves its socket file behind.
func serveFused(t *testing.T, socket string) (stop func()) {
	t.Helper()
	_ = os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	srv := fused.NewHTTPServer(idleFS{})
	go srv.Serve(l)
	var once sync.Once
	stop = func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(stop)
	return stop
}

// fakeClock is the health check's clock, moved by the test: the grace
// period is judged, not waited for.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestHealthCoversServeAndFused checks the DaemonSet's probe against a real
// snapshots service (serve's side) and fused's real HTTP server: it fails
// while either never answered, rides out a restart of either shorter than
// the grace period, and fails, naming the process, once one has been down
// longer.
func TestHealthCoversServeAndFused(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "lazysnap.sock")
	fusedSocket := filepath.Join(dir, "fused.sock")
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	const grace = 30 * time.Second
	h := NewHealth(socket, fusedSocket, WithHealthGrace(grace), withHealthClock(clock.Now))
	check := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return h.Check(ctx)
	}

	stopFused := serveFused(t, fusedSocket)
	if err := check(); err == nil || !strings.Contains(err.Error(), "serve") {
		t.Fatalf("check before serve ever answered = %v, want a failure naming serve", err)
	}
	serveSnapshots(t, socket, filepath.Join(dir, "snapshots"))
	if err := check(); err != nil {
		t.Fatalf("check with both up: %v", err)
	}

	// fused is killed; serve starts it again within the grace period.
	stopFused()
	for range 3 {
		if err := check(); err != nil {
			t.Fatalf("check %s into a fused restart: %v", clock.Now().Sub(time.Unix(1_000_000, 0)), err)
		}
		clock.advance(grace / 3)
	}
	stopFused = serveFused(t, fusedSocket)
	if err := check(); err != nil {
		t.Fatalf("check after fused came back: %v", err)
	}

	// fused stays down past the grace period.
	stopFused()
	if err := check(); err != nil {
		t.Fatalf("check as fused goes down: %v", err)
	}
	clock.advance(grace)
	err := check()
	if err == nil || !strings.Contains(err.Error(), "fused") || strings.Contains(err.Error(), "serve") {
		t.Fatalf("check with fused down for the grace period = %v, want a failure naming fused only", err)
	}
	if !errdefs.IsUnavailable(err) {
		t.Errorf("error %v is not errdefs.ErrUnavailable", err)
	}
	serveFused(t, fusedSocket)
	if err := check(); err != nil {
		t.Fatalf("check after fused came back again: %v", err)
	}
}

// TestHealthServeOnly checks that without a fused socket (fuse_manager
// off) only serve is asked.
func TestHealthServeOnly(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "lazysnap.sock")
	serveSnapshots(t, socket, filepath.Join(dir, "snapshots"))
	if err := NewHealth(socket, "").Check(context.Background()); err != nil {
		t.Fatalf("serve-only check: %v", err)
	}
	if err := NewHealth(socket, filepath.Join(dir, "fused.sock")).Check(context.Background()); err == nil {
		t.Fatal("check passed with no fused answering")
	}
}
