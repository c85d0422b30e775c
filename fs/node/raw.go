package node

import (
	"context"
	"io"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/lazysnap/lazysnap/fs/index"
)

// rawFS answers the kernel's requests for one layer. It is a
// fuse.RawFileSystem of its own rather than go-fuse's node tree because a
// layer needs no per-node state: the node ID of an inode is ino(id), fixed
// by the TOC, so a process that resumes a connection (Resume) answers node
// IDs an earlier process handed out without having seen a LOOKUP for them,
// and FORGET has nothing to forget. The only state is open files (handles).
type rawFS struct {
	fuse.RawFileSystem // ENOSYS for everything a read-only layer lacks

	t       *tree
	timeout time.Duration
	handles *handles
}

func newRawFS(t *tree, timeout time.Duration, h *handles) *rawFS {
	return &rawFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), t: t, timeout: timeout, handles: h}
}

func (fs *rawFS) String() string { return "lazysnap" }

// Init keeps the server, to register passthrough backing files with.
func (fs *rawFS) Init(s *fuse.Server) { fs.handles.server = s }

// id returns the index ID of a node ID, false for one no TOC inode has.
func (fs *rawFS) id(nodeID uint64) (index.ID, bool) {
	id := index.ID(nodeID - 1)
	return id, nodeID >= 1 && nodeID <= uint64(fs.t.idx.Len()) && fs.t.idx.Valid(id)
}

func (fs *rawFS) Lookup(_ <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	dir, ok := fs.id(h.NodeId)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	if !fs.t.idx.IsDir(dir) {
		return fuse.Status(syscall.ENOTDIR)
	}
	id, ok := fs.t.idx.Lookup(dir, name)
	if !ok {
		// A negative entry the kernel caches, as go-fuse's bridge did.
		out.NodeId = 0
		out.SetEntryTimeout(fs.timeout)
		return fuse.OK
	}
	fs.fillEntry(id, out)
	return fuse.OK
}

func (fs *rawFS) fillEntry(id index.ID, out *fuse.EntryOut) {
	out.NodeId = ino(id)
	out.Generation = 0
	fillAttr(fs.t.idx, id, &out.Attr)
	out.SetEntryTimeout(fs.timeout)
	out.SetAttrTimeout(fs.timeout)
}

func (fs *rawFS) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	id, ok := fs.id(in.NodeId)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	fillAttr(fs.t.idx, id, &out.Attr)
	out.SetTimeout(fs.timeout)
	return fuse.OK
}

func (fs *rawFS) Readlink(_ <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	id, ok := fs.id(h.NodeId)
	if !ok {
		return nil, fuse.Status(syscall.ESTALE)
	}
	target, ok := fs.t.idx.Readlink(id)
	if !ok {
		return nil, fuse.EINVAL
	}
	return []byte(target), fuse.OK
}

func (fs *rawFS) GetXAttr(_ <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	id, ok := fs.id(h.NodeId)
	if !ok {
		return 0, fuse.Status(syscall.ESTALE)
	}
	n, errno := fs.t.getxattr(id, attr, dest)
	return n, fuse.Status(errno)
}

func (fs *rawFS) ListXAttr(_ <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	id, ok := fs.id(h.NodeId)
	if !ok {
		return 0, fuse.Status(syscall.ESTALE)
	}
	n, errno := fs.t.listxattr(id, dest)
	return n, fuse.Status(errno)
}

func (fs *rawFS) StatFs(_ <-chan struct{}, _ *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	fs.t.statfs(out)
	return fuse.OK
}

// OpenDir needs no handle: a directory's entries are read by offset from
// the immutable index, so a handle of an earlier process works as well.
func (fs *rawFS) OpenDir(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	id, ok := fs.id(in.NodeId)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	if !fs.t.idx.IsDir(id) {
		return fuse.Status(syscall.ENOTDIR)
	}
	out.Fh = 0
	return fuse.OK
}

func (fs *rawFS) ReleaseDir(*fuse.ReleaseIn) {}

func (fs *rawFS) ReadDir(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, false)
}

func (fs *rawFS) ReadDirPlus(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, true)
}

// readDir lists a directory from entry in.Offset on; an entry's offset is
// its position plus one.
func (fs *rawFS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	dir, ok := fs.id(in.NodeId)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	n := fs.t.idx.NumChildren(dir)
	for i := int(min(in.Offset, uint64(n))); i < n; i++ {
		name, id := fs.t.idx.Child(dir, i)
		de := fuse.DirEntry{Name: name, Ino: ino(id), Mode: fs.t.idx.Mode(id), Off: uint64(i) + 1}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		e := out.AddDirLookupEntry(de)
		if e == nil {
			break
		}
		fs.fillEntry(id, e)
	}
	return fuse.OK
}

// Open opens the file's cache entry. Layers never change, so the kernel
// keeps its page cache across opens; a file the cache holds completely is
// handed to the kernel to read directly (FUSE passthrough) when allowed.
func (fs *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	id, ok := fs.id(in.NodeId)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	if fs.t.idx.Mode(id)&syscall.S_IFMT != syscall.S_IFREG {
		return fuse.Status(syscall.EINVAL)
	}
	if in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return fuse.Status(syscall.EROFS)
	}
	ctx := &fuse.Context{Caller: in.Caller, Cancel: cancel}
	fh, flags, errno := fs.handles.open(ctx, id, in.Unique)
	if errno != 0 {
		return fuse.Status(errno)
	}
	if fs.t.opened != nil {
		fs.t.opened.open(id, func() string { return fs.t.path(id) })
	}
	out.Fh, out.OpenFlags, out.BackingID = fh.fh, flags, fh.backingID
	return fuse.OK
}

// Read reads through the layer: the context is cancelled by a FUSE
// interrupt, and the layer cancels its reads at unmount.
func (fs *rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	id, ok := fs.id(in.NodeId)
	if !ok {
		return nil, fuse.Status(syscall.ESTALE)
	}
	ctx := &fuse.Context{Caller: in.Caller, Cancel: cancel}
	h, errno := fs.handles.get(ctx, id, in.Fh)
	if errno != 0 {
		return nil, fuse.Status(errno)
	}
	if fs.t.reads != nil {
		fs.t.reads.read(id, int64(in.Offset), int64(in.Size))
	}
	n, err := h.f.ReadAt(ctx, buf[:min(len(buf), int(in.Size))], int64(in.Offset))
	if err != nil && err != io.EOF {
		return nil, fuse.Status(fs.t.errno(ctx, "read", err))
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

// Flush is never needed (FOPEN_NOFLUSH); ENOSYS stops the kernel asking.
func (fs *rawFS) Flush(<-chan struct{}, *fuse.FlushIn) fuse.Status { return fuse.ENOSYS }

func (fs *rawFS) Release(_ <-chan struct{}, in *fuse.ReleaseIn) {
	id, ok := fs.id(in.NodeId)
	if !ok {
		return
	}
	if err := fs.handles.release(id, in.Fh, in.Unique); err != nil {
		fs.t.errno(context.Background(), "release", err)
	}
}
