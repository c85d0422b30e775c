package node

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/fs/index"
)

// ioModes counts, per inode, the handles open in the kernel's cached mode
// (positive) or in passthrough mode (negative), as the kernel's own
// iocachectr does: an inode is never in both. With the count it keeps the
// backing ID of an inode's passthrough handles: the kernel refuses (EIO)
// an open in the other mode, or with another backing file, while handles
// are open. The table lives in a memfd that is handed over with the
// connection, because a process that resumes it must know how the handles
// an earlier process opened were opened, and with which backing ID.
type ioModes struct {
	file *os.File
	mem  []byte
	ctr  []atomic.Int32 // two per inode: the count, the backing ID
}

// ioModeBytes is the size of one inode's entry.
const ioModeBytes = 8

// newIOModes creates the counts of n inodes, all zero.
func newIOModes(n int) (*ioModes, error) {
	fd, err := unix.MemfdCreate("lazysnap-iomodes", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating the open-mode table: %w", err)
	}
	f := os.NewFile(uintptr(fd), "lazysnap-iomodes")
	if err := f.Truncate(int64(max(n, 1)) * ioModeBytes); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing the open-mode table: %w", err)
	}
	return mapIOModes(f, n)
}

// mapIOModes maps the counts of n inodes kept in f, which it takes.
func mapIOModes(f *os.File, n int) (*ioModes, error) {
	st, err := f.Stat()
	if err != nil || st.Size() < int64(max(n, 1))*ioModeBytes {
		f.Close()
		return nil, fmt.Errorf("open-mode table too small for %d inodes (%v)", n, err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, max(n, 1)*ioModeBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mapping the open-mode table: %w", err)
	}
	ctr := unsafe.Slice((*atomic.Int32)(unsafe.Pointer(&mem[0])), 2*n)
	return &ioModes{file: f, mem: mem, ctr: ctr}, nil
}

// count is the number of id's handles: positive in cached mode, negative
// in passthrough mode.
func (m *ioModes) count(id index.ID) int32 { return m.ctr[2*id].Load() }

// backing is the backing ID of id's passthrough handles.
func (m *ioModes) backing(id index.ID) int32 { return m.ctr[2*id+1].Load() }

// opened counts a new handle of id: cached, or passthrough with backing.
func (m *ioModes) opened(id index.ID, backing int32) {
	if backing == 0 {
		m.ctr[2*id].Add(1)
		return
	}
	m.ctr[2*id+1].Store(backing)
	m.ctr[2*id].Add(-1)
}

// released counts one handle of id fewer, whichever its mode, and returns
// the backing ID to unregister when it was id's last passthrough handle.
func (m *ioModes) released(id index.ID) (unregister int32) {
	switch v := m.ctr[2*id].Load(); {
	case v > 0:
		m.ctr[2*id].Add(-1)
	case v == -1:
		unregister = m.ctr[2*id+1].Swap(0)
		m.ctr[2*id].Add(1)
	case v < 0:
		m.ctr[2*id].Add(1)
	}
	return unregister
}

func (m *ioModes) close() error {
	err := unix.Munmap(m.mem)
	return errors.Join(err, m.file.Close())
}
