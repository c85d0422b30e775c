// Package fdpass sends messages with open files attached (SCM_RIGHTS) over
// a unix seqpacket socket, whose message boundaries keep each message and
// its files together.
package fdpass

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// MaxMessage bounds a message's payload.
const MaxMessage = 1 << 20

// maxFiles bounds the files of one message, below the kernel's 253.
const maxFiles = 16

// Send sends payload with files attached as one message.
func Send(c *net.UnixConn, payload []byte, files ...*os.File) error {
	if len(payload) > MaxMessage || len(files) > maxFiles {
		return fmt.Errorf("message of %d bytes and %d files is too large", len(payload), len(files))
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(payload, oob, nil)
	if err != nil {
		return fmt.Errorf("sending a message: %w", err)
	}
	if n != len(payload) || oobn != len(oob) {
		return fmt.Errorf("sending a message: short write (%d of %d bytes)", n, len(payload))
	}
	return nil
}

// Recv receives one message and the files attached to it, which are the
// caller's to close. At the end of the stream it returns io.EOF.
func Recv(c *net.UnixConn) ([]byte, []*os.File, error) {
	// A buffer of the message's own size, not of MaxMessage: serve collects
	// each mount as it is mounted, and a fresh zeroed MiB per message was a
	// visible part of fused's CPU while an image started.
	size, err := nextSize(c)
	if err != nil {
		return nil, nil, fmt.Errorf("receiving a message: %w", err)
	}
	buf := make([]byte, min(size, MaxMessage))
	oob := make([]byte, unix.CmsgSpace(maxFiles*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, fmt.Errorf("receiving a message: %w", err)
	}
	files, ferr := parseFiles(oob[:oobn])
	switch {
	case ferr != nil:
	case flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0:
		ferr = errors.New("receiving a message: truncated")
	case n == 0 && len(files) == 0:
		ferr = io.EOF
	}
	if ferr != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, ferr
	}
	return buf[:n], files, nil
}

// nextSize returns the length of the next message without receiving it
// (MSG_PEEK|MSG_TRUNC: a seqpacket socket tells a message's whole length),
// waiting for one as a read would, deadline included; 0 at the end of the
// stream.
func nextSize(c *net.UnixConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, _, _, rerr = unix.Recvmsg(int(fd), nil, nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		return rerr != unix.EAGAIN
	})
	return n, cmp.Or(err, rerr)
}

func parseFiles(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parsing attached files: %w", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "passed"))
		}
	}
	return files, nil
}
