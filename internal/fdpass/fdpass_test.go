package fdpass

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// pair returns the two ends of a unix seqpacket socket.
func pair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "seqpacket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// TestSendRecv: messages keep their bytes, their boundaries and their
// files; the end of the stream is io.EOF.
func TestSendRecv(t *testing.T) {
	t.Parallel()
	a, b := pair(t)
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	big := bytes.Repeat([]byte("x"), 100<<10)
	msgs := [][]byte{[]byte(`{"op":"collect"}`), big, []byte("last")}
	if err := Send(a, msgs[0], f); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs[1:] {
		if err := Send(a, m); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()
	for i, want := range msgs {
		got, files, err := Recv(b)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("message %d: %d bytes, want %d", i, len(got), len(want))
		}
		wantFiles := 0
		if i == 0 {
			wantFiles = 1
		}
		if len(files) != wantFiles {
			t.Errorf("message %d: %d files attached", i, len(files))
		}
		for _, f := range files {
			f.Close()
		}
	}
	if _, _, err := Recv(b); !errors.Is(err, io.EOF) {
		t.Errorf("after the last message: %v, want io.EOF", err)
	}
}

// TestRecvTooLarge: a message over MaxMessage is an error, not a message
// cut short.
func TestRecvTooLarge(t *testing.T) {
	t.Parallel()
	a, b := pair(t)
	if err := unix.SetsockoptInt(fd(t, a), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.WriteMsgUnix(make([]byte, MaxMessage+1), nil, nil); err != nil {
		t.Skipf("cannot send a message that large here: %v", err)
	}
	if _, _, err := Recv(b); err == nil {
		t.Fatal("a message over MaxMessage was received")
	}
}

// TestRecvAllocatesTheMessage: receiving a small message allocates about
// its size, not MaxMessage. A MiB per message, zeroed and faulted in, was
// a visible part of fused's CPU while an image started (serve collects each
// mount it mounts).
func TestRecvAllocatesTheMessage(t *testing.T) {
	a, b := pair(t)
	const n = 20
	for range n {
		if err := Send(a, []byte(`{"done":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		if _, _, err := Recv(b); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if perMsg := (after.TotalAlloc - before.TotalAlloc) / n; perMsg > 16<<10 {
		t.Errorf("%d bytes allocated per message of 13 bytes", perMsg)
	}
}

func fd(t *testing.T, c *net.UnixConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out int
	rc.Control(func(fd uintptr) { out = int(fd) })
	return out
}
