package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/fused"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/unixsock/unixsocktest"
)

func TestMain(m *testing.M) { unixsocktest.Main(m) }

// withUmask sets the process umask for the test. The umask is process-wide:
// tests calling it must not be parallel.
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// looseState makes the state root and its subdirectories 0755, as the
// DaemonSet's hostPath (DirectoryOrCreate) or an older release left them.
func looseState(t *testing.T, root string) {
	t.Helper()
	for _, d := range []string{root, filepath.Join(root, "snapshots"), filepath.Join(root, "cache"), filepath.Join(root, "traces")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// assertPerms fails the test for each path whose permission bits differ.
func assertPerms(t *testing.T, want map[string]fs.FileMode) {
	t.Helper()
	for p, mode := range want {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
		} else if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), mode)
		}
	}
}

func statePerms(root string) map[string]fs.FileMode {
	return map[string]fs.FileMode{root: 0o700, filepath.Join(root, "snapshots"): 0o700,
		filepath.Join(root, "cache"): 0o700, filepath.Join(root, "traces"): 0o700}
}

// waitSocket waits until path is a socket, or the server has failed.
func waitSocket(t *testing.T, path string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == fs.ModeSocket {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("server exited before listening on %s: %v", path, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket at %s", path)
		}
	}
}

// probeAttack connects to sock as another user while loosening, one after
// the other, each of lazysnap's defences: the directory's mode, then the
// socket's. want are the reports expected at each step.
func probeAttack(t *testing.T, pr *unixsocktest.Prober, sock string, kind unixsocktest.Kind, wantLoose string) {
	t.Helper()
	nobody := unixsocktest.Nobody
	if got := pr.Probe(nobody, sock, kind); got != "dial EACCES" {
		t.Errorf("uid %d connecting to %s: %q, want dial EACCES", nobody, sock, got)
	}
	if err := os.Chmod(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := pr.Probe(nobody, sock, kind); got != "dial EACCES" {
		t.Errorf("uid %d connecting to %s in a 0755 directory: %q, want dial EACCES", nobody, sock, got)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := pr.Probe(nobody, sock, kind); got != wantLoose {
		t.Errorf("uid %d connecting to %s made 0666: %q, want %q", nobody, sock, got, wantLoose)
	}
}

// TestServeLocalAccess runs serve under umask 000 over a state root a
// hostPath made 0755, then attacks its sockets as another user: the
// snapshot socket and the CRI image-service socket are 0600 in 0700
// directories, the state directories are 0700, and with every mode loosened
// the peer check still hangs up on the intruder.
func TestServeLocalAccess(t *testing.T) {
	testenv.RequireRoot(t)
	withUmask(t, 0)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	looseState(t, root)
	sock, cri := filepath.Join(dir, "run", "lazysnap.sock"), filepath.Join(dir, "cri", "cri.sock")
	cfgPath := filepath.Join(dir, "config.toml")
	cfg := fmt.Sprintf("root = %q\naddress = %q\nfuse_manager = false\n[cri_image_service]\naddress = %q\ncontainerd_address = %q\n",
		root, sock, cri, filepath.Join(dir, "containerd.sock"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", cfgPath}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitSocket(t, sock, done)
	waitSocket(t, cri, done)

	want := statePerms(root)
	want[sock], want[cri] = 0o600, 0o600
	want[filepath.Dir(sock)], want[filepath.Dir(cri)] = 0o700, 0o700
	assertPerms(t, want)

	unixsocktest.OpenPath(t, dir)
	pr := unixsocktest.NewProber(t)
	for _, s := range []string{sock, cri} {
		probeAttack(t, pr, s, unixsocktest.Read, "eof")
		if got := pr.Probe(0, s, unixsocktest.Read); got != "data" {
			t.Errorf("root connecting to %s: %q, want data (the gRPC server's settings)", s, got)
		}
	}
}

// TestFusedLocalAccess runs fused under umask 000 over a state root a
// hostPath made 0755, then attacks its socket as another user: the socket
// is 0600 in the 0700 root, and with both modes loosened the API answers
// 403.
func TestFusedLocalAccess(t *testing.T) {
	testenv.RequireRoot(t)
	withUmask(t, 0)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	looseState(t, root)
	cfg := defaultConfig()
	cfg.Root = root
	sock := fusedSocket(root)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runFused(ctx, cfg, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fused: %v", err)
		}
	})
	waitSocket(t, sock, done)
	if err := fused.NewClient(sock).Healthz(ctx); err != nil {
		t.Fatalf("root's health check: %v", err)
	}

	want := statePerms(root)
	want[sock] = 0o600
	assertPerms(t, want)

	unixsocktest.OpenPath(t, dir)
	pr := unixsocktest.NewProber(t)
	probeAttack(t, pr, sock, unixsocktest.HTTP, "http 403")
	if got := pr.Probe(0, sock, unixsocktest.HTTP); got != "http 200" {
		t.Errorf("root: %q, want http 200", got)
	}
}
