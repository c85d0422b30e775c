package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// Mounted is a layer being served at its mountpoint.
type Mounted struct {
	mountpoint string
	server     *fuse.Server
	raw        *rawFS
	modes      *ioModes
	small      bool // mounted with smallRequestBuffers
	resumed    bool // the connection was set up by an earlier process
}

func newMounted(mountpoint string, l *layer.Layer, o options, modes *ioModes) *Mounted {
	t := &tree{layer: l, idx: l.Index(), passthrough: o.passthrough, logger: o.logger}
	if o.firstOpen != nil {
		t.opened = newOpenedSet(l.Index().Len(), o.firstOpen)
	}
	if o.readRanges {
		t.reads = newReadSet(l.Index())
	}
	raw := newRawFS(t, o.timeout, newHandles(t, modes, o.passthrough))
	return &Mounted{mountpoint: mountpoint, raw: raw, modes: modes}
}

// ReadRanges returns, with WithReadRanges, the byte ranges read so far of
// each large file of the layer that was read, by its absolute path in the
// layer (the name WithFirstOpen reports), at chunk granularity; nil
// without. It may be called at any time, also after Unmount, and each call
// returns everything read since the mount. Reads the kernel served from its
// page cache, or from a cache file directly (passthrough, a file complete
// in the cache when opened), never reach it.
func (m *Mounted) ReadRanges() map[string][]prefetchlist.Range {
	t := m.raw.t
	if t.reads == nil {
		return nil
	}
	return t.reads.ranges(t.path)
}

// Unmount unmounts the layer; a mount still busy is detached and goes away
// when its last user does.
func (m *Mounted) Unmount() error {
	var err error
	if m.resumed {
		// go-fuse cannot unmount a /dev/fd/N mount: it does not know where.
		for try := range 5 {
			if err = unix.Unmount(m.mountpoint, 0); err == nil {
				break
			}
			time.Sleep(time.Duration(try+1) * 5 * time.Millisecond)
		}
	} else {
		err = m.server.Unmount()
	}
	if err != nil {
		if derr := unix.Unmount(m.mountpoint, unix.MNT_DETACH); derr != nil && !errors.Is(derr, unix.EINVAL) {
			return errors.Join(fmt.Errorf("unmounting %s: %w", m.mountpoint, err), derr)
		}
		go m.cleanUp()
		return nil
	}
	m.cleanUp()
	return nil
}

// cleanUp closes what the mount held once the kernel stops sending.
func (m *Mounted) cleanUp() {
	m.server.Wait()
	m.raw.handles.closeAll()
	m.modes.close()
}

// Handover is what another process needs to resume serving a mount. Its
// files are the caller's to close.
type Handover struct {
	Mountpoint string
	Conn       *os.File // the mount's /dev/fuse connection
	Modes      *os.File // the open-mode counts of its inodes (a memfd)
	State      []byte   // how the connection was set up: opaque
}

// Close closes the handover's files.
func (h Handover) Close() error {
	return errors.Join(closeFile(h.Conn), closeFile(h.Modes))
}

func closeFile(f *os.File) error {
	if f == nil {
		return nil
	}
	return f.Close()
}

// Handover returns duplicates of the mount's connection and open modes:
// while any process holds them, the connection survives this one, and
// requests wait in the kernel for a process to Resume it.
func (m *Mounted) Handover() (Handover, error) {
	conn, err := dupFile(m.server.DeviceFD(), "/dev/fuse")
	if err != nil {
		return Handover{}, err
	}
	modes, err := dupFile(int(m.modes.file.Fd()), "lazysnap-iomodes")
	if err != nil {
		conn.Close()
		return Handover{}, err
	}
	return Handover{Mountpoint: m.mountpoint, Conn: conn, Modes: modes, State: m.state()}, nil
}

func dupFile(fd int, name string) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating %s: %w", name, err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// state is the kernel's INIT request followed by one byte: whether the
// request buffers are small.
func (m *Mounted) state() []byte {
	in := m.server.KernelSettings()
	b := make([]byte, unsafe.Sizeof(*in)+1)
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(in)), unsafe.Sizeof(*in)))
	if m.small {
		b[len(b)-1] = 1
	}
	return b
}

func parseState(b []byte) (fuse.InitIn, bool, error) {
	var in fuse.InitIn
	n := int(unsafe.Sizeof(in))
	if len(b) != n+1 {
		return in, false, fmt.Errorf("handover state of %d bytes, want %d", len(b), n+1)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&in)), n), b)
	return in, b[n] == 1, nil
}

// notifyResend is FUSE_NOTIFY_RESEND (Linux 6.9): the kernel queues again
// every request a process read from the connection and did not answer.
const notifyResend = 7

// Resume serves l on the connection of h, which an earlier process mounted
// and handed over, and takes h's files. The requests that process read but
// did not answer are asked for again. l must be the layer of the same TOC.
func Resume(h Handover, l *layer.Layer, opts ...Option) (*Mounted, error) {
	defer h.Close()
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	in, small, err := parseState(h.State)
	if err != nil {
		return nil, err
	}
	mo := mountOptions(l, o)
	if small {
		smallRequestBuffers(&mo)
	}
	mo.DirectMount, mo.DirectMountStrict, mo.ResumeInit = false, false, &in
	modesFile, err := dupFile(int(h.Modes.Fd()), "lazysnap-iomodes")
	if err != nil {
		return nil, err
	}
	modes, err := mapIOModes(modesFile, l.Index().Len())
	if err != nil {
		return nil, err
	}
	m := newMounted(h.Mountpoint, l, o, modes)
	m.small, m.resumed = small, true
	if m.server, err = serveConn(h.Conn, m.raw, &mo); err != nil {
		modes.close()
		return nil, fmt.Errorf("resuming layer %s at %s: %w", l.Digest(), h.Mountpoint, err)
	}
	if err := resend(m.server.DeviceFD()); err != nil {
		o.logger.Warn("requests read by the earlier fused wait for an interrupt", "mountpoint", h.Mountpoint, "error", err)
	}
	return m, nil
}

// serveConn serves raw on a duplicate of conn.
func serveConn(conn *os.File, raw fuse.RawFileSystem, mo *fuse.MountOptions) (*fuse.Server, error) {
	fd, err := unix.FcntlInt(conn.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating the connection: %w", err)
	}
	server, err := fuse.NewServer(raw, fmt.Sprintf("/dev/fd/%d", fd), mo)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	go server.Serve()
	return server, nil
}

// resend writes FUSE_NOTIFY_RESEND: a notification is a reply header with
// unique 0 and the code in its error field.
func resend(fd int) error {
	var b [16]byte
	binary.NativeEndian.PutUint32(b[0:], 16)
	binary.NativeEndian.PutUint32(b[4:], notifyResend)
	if _, err := unix.Write(fd, b[:]); err != nil {
		return fmt.Errorf("FUSE_NOTIFY_RESEND: %w", err)
	}
	return nil
}
