package unixsock

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// PeerUID returns the user id of the process that connected c, a unix
// socket connection, as the kernel recorded it at connect (SO_PEERCRED): the
// peer cannot forge it.
func PeerUID(c net.Conn) (uint32, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, fmt.Errorf("peer credentials of a %T: %w", c, errdefs.ErrInvalidArgument)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return 0, fmt.Errorf("peer credentials: %w", credErr)
	}
	return cred.Uid, nil
}

// Trusted reports whether a peer with user id uid may use lazysnap's
// sockets: root, or the user lazysnap runs as (root in any deployment but a
// developer's).
func Trusted(uid uint32) bool { return uid == 0 || uid == uint32(os.Geteuid()) }

type peerKey struct{}

// ConnContext is an http.Server ConnContext: it records the uid of the
// connection's peer for PeerFromContext. A connection whose peer is
// unknown gets no uid, which handlers must treat as untrusted.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uid, err := PeerUID(c)
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, uid)
}

// PeerFromContext returns the peer uid ConnContext recorded.
func PeerFromContext(ctx context.Context) (uint32, bool) {
	uid, ok := ctx.Value(peerKey{}).(uint32)
	return uid, ok
}

// TrustedOnly returns l with an Accept that closes, and logs, every
// connection whose peer is not Trusted, for servers such as gRPC's that
// have no cheaper place to refuse a caller. The socket's mode already keeps
// other users out; this holds even if someone loosens it.
func TrustedOnly(l net.Listener, log *slog.Logger) net.Listener {
	return trustedListener{Listener: l, log: log}
}

type trustedListener struct {
	net.Listener
	log *slog.Logger
}

func (l trustedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := PeerUID(c)
		if err == nil && Trusted(uid) {
			return c, nil
		}
		if err == nil {
			err = fmt.Errorf("peer uid %d: %w", uid, errdefs.ErrPermissionDenied)
		}
		l.log.Warn("refused a connection", "socket", l.Addr().String(), "error", err)
		c.Close()
	}
}
