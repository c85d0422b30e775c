package fusedproc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/internal/fused"
	"github.com/lazysnap/lazysnap/internal/unixsock"
)

// childSocketEnv makes the test binary, started by Ensure, a fused: it
// serves fused's real server on the socket the variable names.
const childSocketEnv = "FUSEDPROC_TEST_SOCKET"

func TestMain(m *testing.M) {
	if sock := os.Getenv(childSocketEnv); sock != "" {
		os.Exit(serveChild(sock))
	}
	os.Exit(m.Run())
}

// stopFS is a file system with nothing to mount; unmounting "/stop" ends
// the child, so that each test can stop the fused it started (it runs in
// its own session, out of reach of the test's process group).
type stopFS struct{ stop chan struct{} }

func (stopFS) Mount(context.Context, string, map[string]string) error {
	return errdefs.ErrNotImplemented
}
func (stopFS) Check(context.Context, string, map[string]string) error { return errdefs.ErrNotFound }
func (f stopFS) Unmount(_ context.Context, mp string) error {
	if mp == "/stop" {
		close(f.stop)
	}
	return nil
}

func serveChild(sock string) int {
	l, err := unixsock.Listen(context.Background(), sock)
	if err != nil {
		return 1
	}
	fsys := stopFS{stop: make(chan struct{})}
	srv := fused.NewHTTPServer(fsys)
	go srv.Serve(l)
	println("child fused serving") // to the log file
	select {
	case <-fsys.stop:
	case <-time.After(time.Minute): // never outlive a crashed test for long
	}
	srv.Close()
	return 0
}

// childArgv is the command that makes this test binary a fused on sock.
func childArgv(t *testing.T, sock string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"/usr/bin/env", childSocketEnv + "=" + sock, exe}
}

func TestEnsureStartsThenReuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sock, logFile := filepath.Join(dir, "fused.sock"), filepath.Join(dir, "fused.log")
	c, err := Ensure(ctx, sock, childArgv(t, sock), WithLogFile(logFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Unmount(ctx, "/stop") })
	if err := c.Healthz(ctx); err != nil {
		t.Fatalf("started fused does not answer: %v", err)
	}
	// A second Ensure finds it: a command that cannot run proves nothing
	// is started.
	if _, err := Ensure(ctx, sock, []string{"/nonexistent/fused"}); err != nil {
		t.Fatalf("Ensure with fused running: %v", err)
	}
	if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), "child fused serving") {
		t.Errorf("fused's output did not reach its log: %q, %v", b, err)
	}
}

func TestEnsureChildExits(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fused.sock")
	start := time.Now()
	_, err := Ensure(context.Background(), sock, []string{"/bin/false"})
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Ensure = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("noticing the exit took %v: it waited for the start timeout", d)
	}
}

func TestEnsureChildNeverAnswers(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fused.sock")
	_, err := Ensure(context.Background(), sock, []string{"/bin/sleep", "2"}, WithStartTimeout(200*time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ensure = %v, want DeadlineExceeded", err)
	}
}

func TestEnsureCannotStart(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fused.sock")
	if _, err := Ensure(context.Background(), sock, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("no command: %v", err)
	}
	if _, err := Ensure(context.Background(), sock, []string{"/nonexistent/fused"}); err == nil {
		t.Error("started a command that does not exist")
	}
}

// TestSuperviseRestartsAKilledFused: fused is stopped behind serve's back
// (as by kill -9); Supervise notices, starts it again and says so.
func TestSuperviseRestartsAKilledFused(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "fused.sock")
	argv := childArgv(t, sock)
	c, err := Ensure(ctx, sock, argv, WithLogFile(filepath.Join(dir, "fused.log")))
	if err != nil {
		t.Fatal(err)
	}
	restarted := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- Supervise(ctx, sock, argv, 20*time.Millisecond, func(context.Context) { restarted <- struct{}{} },
			WithLogFile(filepath.Join(dir, "fused.log")))
	}()
	c.Unmount(ctx, "/stop") // the child exits
	select {
	case <-restarted:
	case <-time.After(time.Minute):
		t.Fatal("fused was not started again")
	}
	if err := c.Healthz(ctx); err != nil {
		t.Fatalf("the restarted fused does not answer: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.Unmount(context.Background(), "/stop")
}
