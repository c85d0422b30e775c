package unixsock_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/unixsock"
	"github.com/lazysnap/lazysnap/internal/unixsock/unixsocktest"
)

func TestMain(m *testing.M) { unixsocktest.Main(m) }

// withUmask sets the process umask for the test. The umask is process-wide:
// tests calling it must not be parallel.
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func perm(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func listen(t *testing.T, path string, opts ...unixsock.Option) net.Listener {
	t.Helper()
	l, err := unixsock.Listen(context.Background(), path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// serveHello writes "hi" to every connection l accepts.
func serveHello(l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
}

// TestListenUmask000 is the attack of a permissive umask: bind(2) alone
// would make the socket 0777 and MkdirAll the directory 0777.
func TestListenUmask000(t *testing.T) {
	withUmask(t, 0)
	sock := filepath.Join(t.TempDir(), "run", "sub", "x.sock")
	l := listen(t, sock)
	if got := perm(t, sock); got != 0o600 {
		t.Errorf("socket mode %v, want 0600", got)
	}
	if got := perm(t, filepath.Dir(sock)); got != 0o700 {
		t.Errorf("created socket directory mode %v, want 0700", got)
	}
	if l.Addr().String() != sock {
		t.Errorf("Addr() = %s, want %s", l.Addr(), sock)
	}
	ents, err := os.ReadDir(filepath.Dir(sock))
	if err != nil || len(ents) != 1 {
		t.Errorf("socket directory holds %v (%v), want the socket alone", ents, err)
	}
	serveHello(l)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	l.Close()
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after Close: %v, want it removed", err)
	}
}

// TestListenDirRule: a directory lazysnap owns is made 0700 even when it
// existed; another existing one is left as it is, and the socket in it
// still refuses other users.
func TestListenDirRule(t *testing.T) {
	testenv.RequireRoot(t)
	withUmask(t, 0)
	base := t.TempDir()
	own, shared := filepath.Join(base, "own"), filepath.Join(base, "shared")
	for _, d := range []string{own, shared} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	listen(t, filepath.Join(own, "a.sock"), unixsock.WithOwnDir(true))
	sock := filepath.Join(shared, "b.sock")
	serveHello(listen(t, sock))
	if got := perm(t, own); got != 0o700 {
		t.Errorf("own directory mode %v, want 0700", got)
	}
	if got := perm(t, shared); got != 0o755 {
		t.Errorf("shared directory mode %v, want it left 0755", got)
	}
	unixsocktest.OpenPath(t, shared)
	pr := unixsocktest.NewProber(t)
	if got := pr.Probe(unixsocktest.Nobody, sock, unixsocktest.Read); got != "dial EACCES" {
		t.Errorf("uid %d connecting to the socket in a 0755 directory: %q, want dial EACCES", unixsocktest.Nobody, got)
	}
}

func TestListenStale(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sock := filepath.Join(dir, "x.sock")
	l := listen(t, sock)
	serveHello(l)
	if _, err := unixsock.Listen(ctx, sock); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Listen over a live server: %v, want ErrAlreadyExists", err)
	}

	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	sl.SetUnlinkOnClose(false)
	sl.Close()
	serveHello(listen(t, stale))
	if c, err := net.Dial("unix", stale); err != nil {
		t.Fatalf("dialing the socket that replaced a stale one: %v", err)
	} else {
		c.Close()
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := unixsock.Listen(ctx, file); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("Listen over a regular file: %v, want ErrFailedPrecondition", err)
	}
}

// TestTrustedOnly loosens the socket's mode as an operator might by
// mistake: the peer check still hangs up on another user.
func TestTrustedOnly(t *testing.T) {
	testenv.RequireRoot(t)
	sock := filepath.Join(t.TempDir(), "x.sock")
	serveHello(unixsock.TrustedOnly(listen(t, sock), slog.New(slog.DiscardHandler)))
	unixsocktest.OpenPath(t, filepath.Dir(sock))
	pr := unixsocktest.NewProber(t)
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := pr.Probe(unixsocktest.Nobody, sock, unixsocktest.Read); got != "eof" {
		t.Errorf("uid %d through a 0666 socket: %q, want eof", unixsocktest.Nobody, got)
	}
	if got := pr.Probe(0, sock, unixsocktest.Read); got != "data" {
		t.Errorf("root: %q, want data", got)
	}
}

// TestListenPathTooLong: a socket path the kernel cannot bind (over 107
// bytes, as a deep state root makes it) is refused with an error that says
// so, not bind's "invalid argument". The socket is bound at a temporary
// path a few bytes longer first; that one is checked too.
func TestListenPathTooLong(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, fmt.Sprintf("%0*d", unixsock.MaxPath-len(dir), 0))
	// 97 bytes, whose temporary path is over 107.
	shortEnough := filepath.Join(dir, fmt.Sprintf("%0*d", 95-len(dir)-1, 0), "x")
	for _, path := range []string{deep + "/fused.sock", shortEnough} {
		_, err := unixsock.Listen(context.Background(), path)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "bytes, over the 107") {
			t.Errorf("Listen(%d bytes): %v, want the path refused for its length", len(path), err)
		}
	}
	ok := filepath.Join(dir, "s.sock")
	listen(t, ok)
}
