// Package unixsock creates the unix sockets lazysnap serves on (serve's
// snapshot API, fused's API, the CRI image-service proxy) so that no other
// user can reach them, whatever the umask, and tells a server which user is
// at the other end of a connection.
//
// A socket is bound in a fresh 0700 directory next to its final path,
// chmodded 0600 there and only then renamed into place: bind(2) creates the
// socket file with 0777 minus the umask, and between a plain bind and a chmod
// anyone could connect (and keep the connection after the chmod).
package unixsock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"
)

// Mode is the mode of every socket Listen creates.
const Mode fs.FileMode = 0o600

// DirMode is the mode of the socket directories Listen creates or owns.
const DirMode fs.FileMode = 0o700

// Option configures Listen.
type Option func(*options)

type options struct {
	ownDir bool
}

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		ownDir: false, // The default leaves an existing directory as it is.
	}
}

// WithOwnDir says whether the socket's directory is lazysnap's own (its
// state root, /run/lazysnap), so that Listen makes it 0700 even when
// something else (a DaemonSet's hostPath) created it with another mode. A
// directory Listen has to create is always 0700. The default is false: an
// existing directory such as /run is left as it is; the socket in it is
// 0600 all the same.
func WithOwnDir(on bool) Option { return func(o *options) { o.ownDir = on } }

// MaxPath is the longest path a unix socket can be bound at or reached by:
// an address holds 108 bytes, the terminating NUL included.
const MaxPath = 107

// CheckPath refuses a socket path longer than MaxPath with an error that
// says so; the kernel's own is "bind: invalid argument".
func CheckPath(path string) error {
	if len(path) > MaxPath {
		return fmt.Errorf("unix socket path %s is %d bytes, over the %d a socket address holds: use a shorter directory: %w",
			path, len(path), MaxPath, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Listen listens on the unix socket path with mode 0600. It replaces a stale
// socket file but refuses to steal the socket of a server that still
// answers, and refuses to replace anything that is not a socket.
func Listen(ctx context.Context, path string, opts ...Option) (net.Listener, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := CheckPath(path); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := prepareDir(dir, o.ownDir); err != nil {
		return nil, err
	}
	if err := checkStale(ctx, path); err != nil {
		return nil, err
	}
	return bindPrivate(dir, path)
}

// prepareDir creates dir 0700 when missing, and makes it 0700 when it is
// lazysnap's own.
func prepareDir(dir string, own bool) error {
	_, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, DirMode); err != nil {
			return fmt.Errorf("creating socket directory: %w", err)
		}
		own = true // the umask may have taken bits MkdirAll asked for; 0700 is exact
	case err != nil:
		return fmt.Errorf("socket directory: %w", err)
	}
	if !own {
		return nil
	}
	if err := os.Chmod(dir, DirMode); err != nil {
		return fmt.Errorf("making socket directory private: %w", err)
	}
	return nil
}

// checkStale fails when a server answers on path or path is not a socket.
func checkStale(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: %w", path, errdefs.ErrFailedPrecondition)
	}
	var d net.Dialer
	if c, err := d.DialContext(ctx, "unix", path); err == nil {
		c.Close()
		return fmt.Errorf("%s: another server is listening: %w", path, errdefs.ErrAlreadyExists)
	}
	return nil // the rename in bindPrivate replaces it
}

// bindPrivate binds the socket where only its owner can reach it, makes it
// 0600, and renames it to path, atomically replacing a stale socket. The
// private directory is in dir so that the rename stays on one file system.
func bindPrivate(dir, path string) (net.Listener, error) {
	tmp, err := os.MkdirTemp(dir, ".sock")
	if err != nil {
		return nil, fmt.Errorf("creating private socket directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	if err := CheckPath(bound); err != nil {
		return nil, fmt.Errorf("socket %s is bound at a temporary path first: %w", path, err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // the bound name goes away with tmp; Close removes path
	if err := os.Chmod(bound, Mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("making socket private: %w", err)
	}
	if err := os.Rename(bound, path); err != nil {
		l.Close()
		return nil, fmt.Errorf("moving socket to %s: %w", path, err)
	}
	return &listener{UnixListener: l, addr: &net.UnixAddr{Name: path, Net: "unix"}}, nil
}

// listener reports and, on Close, removes the socket's final path rather
// than the one it was bound to.
type listener struct {
	*net.UnixListener
	addr      *net.UnixAddr
	closeOnce sync.Once
	closeErr  error
}

func (l *listener) Addr() net.Addr { return l.addr }

// Close is idempotent: http.Server and its caller may both close it.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		l.closeErr = l.UnixListener.Close()
		if err := os.Remove(l.addr.Name); err != nil && !errors.Is(err, fs.ErrNotExist) && l.closeErr == nil {
			l.closeErr = err
		}
	})
	return l.closeErr
}
