package node

import (
	"context"
	"io"
	"os"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/lazysnap/lazysnap/fs/layer"
)

// fileNode is a regular file.
type fileNode struct {
	base

	// mu guards cachedOpens, the handles open in the kernel's cached I/O
	// mode. The kernel refuses (EIO) a passthrough open of an inode that
	// has cached-mode handles, as when a shell keeps its binary open while
	// the cache completes and then execs the same file again, so
	// passthrough is offered only while there are none.
	mu          sync.Mutex
	cachedOpens int
}

var _ = (gofs.NodeOpener)((*fileNode)(nil))

// Open opens the file's cache entry. Layers never change, so the kernel
// keeps its page cache across opens; a file the cache holds completely is
// handed to the kernel to read directly (FUSE passthrough) when allowed.
func (n *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	f, err := n.t.layer.OpenFile(n.id)
	if err != nil {
		return nil, 0, n.t.errno(ctx, "open", err)
	}
	if n.t.opened != nil {
		n.t.opened.open(n.id, func() string { return "/" + n.Path(nil) })
	}
	h := &fileHandle{t: n.t, f: f, node: n}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cachedOpens == 0 && n.t.passthrough && f.Size() > 0 && f.Complete() {
		if bf, err := f.BackingFile(); err == nil {
			h.backing = bf
		}
	}
	if h.backing == nil {
		n.cachedOpens++
	}
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

// released forgets a cached-mode handle.
func (n *fileNode) released(h *fileHandle) {
	if h.backing != nil {
		return
	}
	n.mu.Lock()
	n.cachedOpens--
	n.mu.Unlock()
}

// fileHandle is an open file.
type fileHandle struct {
	t       *tree
	f       *layer.File
	node    *fileNode
	backing *os.File // the complete cache file, for passthrough
}

var (
	_ = (gofs.FileReader)((*fileHandle)(nil))
	_ = (gofs.FileReleaser)((*fileHandle)(nil))
	_ = (gofs.FilePassthroughFder)((*fileHandle)(nil))
)

// Read reads through the layer: ctx is cancelled by a FUSE interrupt, and
// the layer cancels its reads at unmount.
func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.f.ReadAt(ctx, dest, off)
	if err != nil && err != io.EOF {
		return nil, h.t.errno(ctx, "read", err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// PassthroughFd offers the complete cache file to the kernel.
func (h *fileHandle) PassthroughFd() (int, bool) {
	if h.backing == nil {
		return 0, false
	}
	return int(h.backing.Fd()), true
}

// Release closes the cache entry.
func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	h.node.released(h)
	if h.backing != nil {
		h.backing.Close()
	}
	if err := h.f.Close(); err != nil {
		return h.t.errno(ctx, "release", err)
	}
	return 0
}
