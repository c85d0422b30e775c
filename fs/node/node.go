// Package node presents a layer as a read-only FUSE file system with
// go-fuse's fuse package: directories look entries up in the layer's index
// on demand, files read through the layer's chunk reader, and errors become
// syscall.Errno here and nowhere else. A mount's connection can be handed
// to another process, which resumes serving it (Mount.Handover, Resume).
package node

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"

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
	reads       *readSet   // nil when reads are not recorded

	parentsOnce sync.Once
	parents     []parentSlot // built on the first path asked for
}

// parentSlot places an inode in its directory (one of them, for a
// hardlinked file).
type parentSlot struct {
	dir  index.ID
	slot int32
}

// path returns an absolute path of id in the layer. The parents are built
// once, when first needed: the kernel names inodes by node ID only, and
// after a resume the node IDs it sends were never looked up here.
func (t *tree) path(id index.ID) string {
	t.parentsOnce.Do(func() {
		t.parents = make([]parentSlot, t.idx.Len())
		for dir := range index.ID(t.idx.Len()) {
			if !t.idx.IsDir(dir) {
				continue
			}
			for i := range t.idx.NumChildren(dir) {
				_, c := t.idx.Child(dir, i)
				if c != index.Root && t.parents[c] == (parentSlot{}) {
					t.parents[c] = parentSlot{dir: dir, slot: int32(i)}
				}
			}
		}
	})
	var names []string
	for id != index.Root && len(names) < t.idx.Len() {
		p := t.parents[id]
		name, _ := t.idx.Child(p.dir, int(p.slot))
		names = append(names, name)
		id = p.dir
	}
	slices.Reverse(names)
	return "/" + strings.Join(names, "/")
}

// statfs reports a read-only file system of the layer's size. The name
// length matters: overlayfs refuses names longer than its layers' maximum.
func (t *tree) statfs(out *fuse.StatfsOut) {
	const bsize = 4096
	s := t.layer.Stats()
	out.Bsize, out.Frsize = bsize, bsize
	out.Blocks = uint64(s.BytesTotal+bsize-1) / bsize
	out.Files = uint64(t.idx.Len())
	out.NameLen = 255
}

// ino is the inode number of id: stable for a layer, shared by hardlinks.
// The root is 1, as FUSE expects.
func ino(id index.ID) uint64 { return uint64(id) + 1 }

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

// getxattr returns one extended attribute from the TOC (or the opaque mark
// of a directory).
func (t *tree) getxattr(id index.ID, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := t.idx.Xattr(id, attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// listxattr lists the names of the extended attributes, NUL-terminated.
func (t *tree) listxattr(id index.ID, dest []byte) (uint32, syscall.Errno) {
	var size int
	xs := t.idx.Xattrs(id)
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
