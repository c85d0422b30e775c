// Package node presents a layer as a read-only FUSE file system with
// go-fuse: directories look entries up in the layer's index on demand,
// files read through the layer's chunk reader, and errors become
// syscall.Errno here and nowhere else.
package node

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/fs/layer"
)

// tree is what every node of one mount shares.
type tree struct {
	layer       *layer.Layer
	idx         *index.Index
	passthrough bool
	logger      *slog.Logger
	opened      *openedSet // nil when first opens are not reported
}

// base is the part common to every node: attributes and extended
// attributes come straight from the index.
type base struct {
	gofs.Inode
	t  *tree
	id index.ID
}

var (
	_ = (gofs.NodeGetattrer)((*base)(nil))
	_ = (gofs.NodeGetxattrer)((*base)(nil))
	_ = (gofs.NodeListxattrer)((*base)(nil))
	_ = (gofs.NodeStatfser)((*base)(nil))
)

// Statfs reports a read-only file system of the layer's size. The name
// length matters: overlayfs refuses names longer than its layers' maximum.
func (n *base) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	const bsize = 4096
	s := n.t.layer.Stats()
	out.Bsize, out.Frsize = bsize, bsize
	out.Blocks = uint64(s.BytesTotal+bsize-1) / bsize
	out.Files = uint64(n.t.idx.Len())
	out.NameLen = 255
	return 0
}

// ino is the inode number of id: stable for a layer, shared by hardlinks.
// The root is 1, as FUSE expects.
func ino(id index.ID) uint64 { return uint64(id) + 1 }

// Getattr reports the attributes recorded in the TOC.
func (n *base) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(n.t.idx, n.id, &out.Attr)
	return 0
}

func fillAttr(idx *index.Index, id index.ID, a *fuse.Attr) {
	at := idx.Attr(id)
	a.Ino = ino(id)
	a.Mode = at.Mode
	a.Size = uint64(at.Size)
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	a.Nlink = at.Nlink
	a.Owner = fuse.Owner{Uid: at.UID, Gid: at.GID}
	a.Mtime, a.Mtimensec = uint64(at.Mtime), at.MtimeNs
	a.Atime, a.Atimensec = a.Mtime, a.Mtimensec
	a.Ctime, a.Ctimensec = a.Mtime, a.Mtimensec
	a.Rdev = uint32(unix.Mkdev(at.DevMajor, at.DevMinor))
}

// Getxattr returns one extended attribute from the TOC (or the opaque mark
// of a directory).
func (n *base) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := n.t.idx.Xattr(n.id, attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr lists the names of the extended attributes, NUL-terminated.
func (n *base) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var size int
	xs := n.t.idx.Xattrs(n.id)
	for _, x := range xs {
		size += len(x.Name) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, x := range xs {
		off += copy(dest[off:], x.Name)
		dest[off] = 0
		off++
	}
	return uint32(size), 0
}

// newNode returns the go-fuse node for id.
func (t *tree) newNode(id index.ID) gofs.InodeEmbedder {
	switch t.idx.Mode(id) & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return &dirNode{base: base{t: t, id: id}}
	case syscall.S_IFREG:
		return &fileNode{base: base{t: t, id: id}}
	case syscall.S_IFLNK:
		return &symlinkNode{base: base{t: t, id: id}}
	default: // devices, fifos and whiteouts have nothing but attributes
		return &base{t: t, id: id}
	}
}

// stableAttr is what go-fuse keys inodes by: hardlinked names of one inode
// get the same go-fuse Inode.
func (t *tree) stableAttr(id index.ID) gofs.StableAttr {
	return gofs.StableAttr{Mode: t.idx.Mode(id) & syscall.S_IFMT, Ino: ino(id)}
}

// errno turns an error of the layer into what the reader sees. A read that
// was interrupted or unmounted is EINTR; everything else (a fetch that
// failed, a chunk that did not verify) is EIO: never a wrong byte.
func (t *tree) errno(ctx context.Context, op string, err error) syscall.Errno {
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	t.logger.ErrorContext(ctx, "lazysnap: "+op+" failed", "layer", t.layer.Digest(), "error", err)
	return syscall.EIO
}
