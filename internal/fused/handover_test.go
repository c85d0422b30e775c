package fused

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// pipeProvider hands over pipes in place of FUSE connections: what arrives
// at the other end of a file must be what was written to the one sent.
type pipeProvider struct {
	mu      sync.Mutex
	resumed map[string]string // mountpoint: what its Conn read
	fail    error
}

func (p *pipeProvider) Handovers(mountpoint string) ([]HandoverEntry, error) {
	var out []HandoverEntry
	for _, mp := range []string{"/mnt/a", "/mnt/b"} {
		if mountpoint != "" && mp != mountpoint {
			continue
		}
		conn, modes := pipeWith(mp+" conn"), pipeWith(mp+" modes")
		out = append(out, HandoverEntry{Mountpoint: mp, Labels: map[string]string{"ref": mp}, State: []byte{1, 2, 3}, Conn: conn, Modes: modes})
	}
	return out, nil
}

func (p *pipeProvider) Resume(_ context.Context, e HandoverEntry) error {
	defer e.Close()
	b, _ := io.ReadAll(e.Conn)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resumed[e.Mountpoint] = string(b)
	return p.fail
}

func (p *pipeProvider) state() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.resumed)
}

// pipeWith returns the read end of a pipe holding s.
func pipeWith(s string) *os.File {
	r, w, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	w.WriteString(s)
	w.Close()
	return r
}

func TestHandoverCollectAndResume(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "h.sock")
	l, err := ListenHandover(sock)
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeProvider{resumed: map[string]string{}}
	done := make(chan error, 1)
	srv := NewHandoverServer(p, slog.New(slog.DiscardHandler))
	go func() { done <- srv.Serve(t.Context(), l) }()
	defer func() {
		l.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	if n := srv.Peers(); n != 0 {
		t.Errorf("%d peers before any connected", n)
	}
	all, err := CollectHandovers(ctx, sock, "")
	if err != nil || len(all) != 2 {
		t.Fatalf("collect all: %d entries, %v", len(all), err)
	}
	one, err := CollectHandovers(ctx, sock, "/mnt/b")
	if err != nil || len(one) != 1 || one[0].Mountpoint != "/mnt/b" || one[0].Labels["ref"] != "/mnt/b" || !slices.Equal(one[0].State, []byte{1, 2, 3}) {
		t.Fatalf("collect one: %+v, %v", one, err)
	}
	h := NewHandoverHolder()
	h.Put(all...)
	h.Put(one...) // replaces /mnt/b's entry, closing the old one
	if h.Len() != 2 {
		t.Fatalf("holder has %d entries, want 2", h.Len())
	}
	h.Each(func(e HandoverEntry) {
		if err := ResumeHandover(ctx, sock, e); err != nil {
			t.Errorf("resume %s: %v", e.Mountpoint, err)
		}
	})
	if want := map[string]string{"/mnt/a": "/mnt/a conn", "/mnt/b": "/mnt/b conn"}; !maps.Equal(p.state(), want) {
		t.Errorf("resumed %v, want %v", p.state(), want)
	}
	p.mu.Lock()
	p.fail = errors.New("no such layer")
	p.mu.Unlock()
	var failed error
	h.Each(func(e HandoverEntry) { failed = ResumeHandover(ctx, sock, e) })
	if failed == nil {
		t.Error("a failed resume reported no error")
	}
	h.Drop("/mnt/a")
	h.Drop("/mnt/b")
	if h.Len() != 0 {
		t.Errorf("holder has %d entries after dropping all", h.Len())
	}
}

// TestWatchHandoverEndsWithServer: the watch returns when fused's end goes.
func TestWatchHandoverEndsWithServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "h.sock")
	l, err := ListenHandover(sock)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err == nil {
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
		accepted <- err
	}()
	if err := WatchHandover(t.Context(), sock, nil); err != nil {
		t.Fatalf("watch: %v", err)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	l.Close()
}

// TestListenHandoverPathTooLong: a handover socket the kernel cannot bind
// (a deep state root) is refused with an error that says why; fused used
// to exit with "bind: invalid argument", and serve then pulled every layer.
func TestListenHandoverPathTooLong(t *testing.T) {
	path := filepath.Join(t.TempDir(), strings.Repeat("d", 100), "fused.handover.sock")
	if _, err := ListenHandover(path); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "bytes, over the 107") {
		t.Errorf("ListenHandover(%d bytes): %v, want the path refused for its length", len(path), err)
	}
}
