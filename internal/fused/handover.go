package fused

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/internal/fdpass"
	"github.com/lazysnap/lazysnap/internal/unixsock"
)

// The handover socket (a unix seqpacket socket beside fused's API socket)
// moves mounts' FUSE connections between processes, with SCM_RIGHTS, so
// that a mount outlives the fused serving it:
//
//	{"op":"collect","mountpoint":""}  fused answers one {"entry":...} with its
//	                                   two files per mount ("" for all), then
//	                                   {"done":true} or {"error":"..."}
//	{"op":"resume","entry":...}+files  fused serves the mount again, answers
//	                                   {"done":true} or {"error":"..."}
//
// serve collects each mount after mounting it and holds the files
// (HandoverHolder); when it starts a new fused it resumes them there first.

// HandoverEntry is one mount in a handover. Its files are its holder's to
// close.
type HandoverEntry struct {
	Mountpoint string            `json:"mountpoint"`
	Labels     map[string]string `json:"labels,omitempty"`
	State      []byte            `json:"state"`
	Conn       *os.File          `json:"-"` // the FUSE connection
	Modes      *os.File          `json:"-"` // the open-mode table
}

// Close closes the entry's files.
func (e HandoverEntry) Close() error {
	var errs []error
	for _, f := range []*os.File{e.Conn, e.Modes} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// HandoverProvider is the side of fused that hands mounts over.
type HandoverProvider interface {
	// Handovers returns the entry of mountpoint, or of every mount for "".
	Handovers(mountpoint string) ([]HandoverEntry, error)
	// Resume serves a mount handed over; it takes the entry's files.
	Resume(ctx context.Context, e HandoverEntry) error
}

type handoverMsg struct {
	Op         string         `json:"op,omitempty"`
	Mountpoint string         `json:"mountpoint,omitempty"`
	Entry      *HandoverEntry `json:"entry,omitempty"`
	Done       bool           `json:"done,omitempty"`
	Error      string         `json:"error,omitempty"`
}

// ListenHandover listens on the handover socket at path, 0600.
func ListenHandover(path string) (*net.UnixListener, error) {
	if err := unixsock.CheckPath(path); err != nil {
		return nil, fmt.Errorf("listening for handovers: %w", err)
	}
	os.Remove(path)
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listening for handovers: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("listening for handovers: %w", err)
	}
	return l, nil
}

// HandoverServer answers handover requests.
type HandoverServer struct {
	p     HandoverProvider
	log   *slog.Logger
	peers atomic.Int64
}

// NewHandoverServer returns the server of p's handovers.
func NewHandoverServer(p HandoverProvider, log *slog.Logger) *HandoverServer {
	return &HandoverServer{p: p, log: log}
}

// Peers is the number of connections open: a serve holding the mounts'
// connections keeps one open (WatchHandover), so with none open no one
// would resume a mount fused leaves behind.
func (s *HandoverServer) Peers() int64 { return s.peers.Load() }

// Serve answers requests on l until l is closed; peers that are not
// unixsock.Trusted are refused.
func (s *HandoverServer) Serve(ctx context.Context, l *net.UnixListener) error {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accepting a handover connection: %w", err)
		}
		go func() {
			defer c.Close()
			if !trustedConn(c) {
				s.log.WarnContext(ctx, "handover connection refused: untrusted peer")
				return
			}
			s.peers.Add(1)
			defer s.peers.Add(-1)
			serveHandoverConn(ctx, c, s.p, s.log)
		}()
	}
}

func trustedConn(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	return err == nil && cred != nil && unixsock.Trusted(cred.Uid)
}

func serveHandoverConn(ctx context.Context, c *net.UnixConn, p HandoverProvider, log *slog.Logger) {
	for {
		req, files, err := recvMsg(c)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.WarnContext(ctx, "handover request", "error", err)
			}
			return
		}
		switch {
		case req.Op == "collect":
			err = sendEntries(c, p, req.Mountpoint)
		case req.Op == "resume" && req.Entry != nil && len(files) == 2:
			e := *req.Entry
			e.Conn, e.Modes, files = files[0], files[1], nil
			err = replyDone(c, p.Resume(ctx, e))
		default:
			err = replyDone(c, fmt.Errorf("bad handover request %q with %d files: %w", req.Op, len(files), errdefs.ErrInvalidArgument))
		}
		for _, f := range files {
			f.Close()
		}
		if err != nil {
			log.WarnContext(ctx, "answering a handover request", "error", err)
			return
		}
	}
}

// sendEntries sends the entries of mountpoint, each with its files, then
// the end.
func sendEntries(c *net.UnixConn, p HandoverProvider, mountpoint string) error {
	es, err := p.Handovers(mountpoint)
	if err != nil {
		return replyDone(c, err)
	}
	defer func() {
		for _, e := range es {
			e.Close()
		}
	}()
	for _, e := range es {
		if err := sendMsg(c, handoverMsg{Entry: &e}, e.Conn, e.Modes); err != nil {
			return err
		}
	}
	return replyDone(c, nil)
}

func replyDone(c *net.UnixConn, err error) error {
	m := handoverMsg{Done: true}
	if err != nil {
		m = handoverMsg{Error: err.Error()}
	}
	return sendMsg(c, m)
}

func sendMsg(c *net.UnixConn, m handoverMsg, files ...*os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return fdpass.Send(c, b, files...)
}

func recvMsg(c *net.UnixConn) (handoverMsg, []*os.File, error) {
	var m handoverMsg
	b, files, err := fdpass.Recv(c)
	if err != nil {
		return m, nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		for _, f := range files {
			f.Close()
		}
		return m, nil, fmt.Errorf("decoding a handover message: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return m, files, nil
}

func dialHandover(ctx context.Context, socket string) (*net.UnixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", socket)
	if err != nil {
		return nil, fmt.Errorf("connecting to fused's handover socket: %w: %w", err, errdefs.ErrUnavailable)
	}
	uc := c.(*net.UnixConn)
	if dl, ok := ctx.Deadline(); ok {
		uc.SetDeadline(dl)
	}
	return uc, nil
}

// CollectHandovers asks the fused on socket for the handover of the mount
// at mountpoint, or of every mount for "".
func CollectHandovers(ctx context.Context, socket, mountpoint string) ([]HandoverEntry, error) {
	c, err := dialHandover(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := sendMsg(c, handoverMsg{Op: "collect", Mountpoint: mountpoint}); err != nil {
		return nil, err
	}
	var out []HandoverEntry
	for {
		m, files, err := recvMsg(c)
		if err == nil && m.Entry != nil && len(files) == 2 {
			e := *m.Entry
			e.Conn, e.Modes = files[0], files[1]
			out = append(out, e)
			continue
		}
		for _, f := range files {
			f.Close()
		}
		if err == nil && m.Error != "" {
			err = fmt.Errorf("fused: %s", m.Error)
		} else if err == nil && !m.Done {
			err = fmt.Errorf("unexpected handover message: %w", errdefs.ErrInvalidArgument)
		}
		if err != nil {
			for _, e := range out {
				e.Close()
			}
			return nil, err
		}
		return out, nil
	}
}

// ResumeHandover has the fused on socket serve e's mount. The files stay
// the caller's.
func ResumeHandover(ctx context.Context, socket string, e HandoverEntry) error {
	c, err := dialHandover(ctx, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := sendMsg(c, handoverMsg{Op: "resume", Entry: &e}, e.Conn, e.Modes); err != nil {
		return err
	}
	m, files, err := recvMsg(c)
	for _, f := range files {
		f.Close()
	}
	switch {
	case err != nil:
		return err
	case m.Error != "":
		return fmt.Errorf("fused resuming %s: %s", e.Mountpoint, m.Error)
	}
	return nil
}

// HandoverHolder keeps the handovers of the mounts serve made, by
// mountpoint: while it holds a mount's connection, the mount survives the
// fused serving it. It is safe for concurrent use.
type HandoverHolder struct {
	mu      sync.Mutex
	entries map[string]HandoverEntry
}

// NewHandoverHolder returns an empty holder.
func NewHandoverHolder() *HandoverHolder {
	return &HandoverHolder{entries: map[string]HandoverEntry{}}
}

// Put keeps es, replacing (and closing) what was held for their mountpoints.
func (h *HandoverHolder) Put(es ...HandoverEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range es {
		if old, ok := h.entries[e.Mountpoint]; ok {
			old.Close()
		}
		h.entries[e.Mountpoint] = e
	}
}

// Drop closes and forgets the entry of mountpoint.
func (h *HandoverHolder) Drop(mountpoint string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.entries[mountpoint]; ok {
		e.Close()
		delete(h.entries, mountpoint)
	}
}

// Each calls fn with every entry held. fn must not close the entry's files;
// they stay open until the entry is dropped.
func (h *HandoverHolder) Each(fn func(HandoverEntry)) {
	h.mu.Lock()
	es := make([]HandoverEntry, 0, len(h.entries))
	for _, e := range h.entries {
		es = append(es, e)
	}
	h.mu.Unlock()
	for _, e := range es {
		fn(e)
	}
}

// Len is the number of entries held.
func (h *HandoverHolder) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.entries)
}

// WatchHandover connects to the handover socket and returns when fused's
// end closes, as it does when fused exits or dies, or when ctx is done.
// connected, when not nil, is called once the connection is up with the
// process ID of the fused at the other end (0 if the kernel does not say).
func WatchHandover(ctx context.Context, socket string, connected func(pid int)) error {
	c, err := dialHandover(ctx, socket)
	if err != nil {
		return err
	}
	if connected != nil {
		connected(peerPID(c))
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	// fused answers nothing until asked: the read ends with the connection.
	_, files, err := fdpass.Recv(c)
	for _, f := range files {
		f.Close()
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// peerPID is the process ID at the other end of c (SO_PEERCRED), or 0.
func peerPID(c *net.UnixConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var pid int
	_ = raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}
