package node

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/lazysnap/lazysnap/fs/index"
)

// dirNode is a directory. Children are looked up in the index when the
// kernel asks, never all at once.
type dirNode struct {
	base
}

var (
	_ = (gofs.NodeLookuper)((*dirNode)(nil))
	_ = (gofs.NodeReaddirer)((*dirNode)(nil))
)

// Lookup finds one name by binary search in the directory's sorted entries.
func (n *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	id, ok := n.t.idx.Lookup(n.id, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	fillAttr(n.t.idx, id, &out.Attr)
	return n.NewInode(ctx, n.t.newNode(id), n.t.stableAttr(id)), 0
}

// Readdir streams the directory's entries from the index.
func (n *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return &dirStream{idx: n.t.idx, dir: n.id, n: n.t.idx.NumChildren(n.id)}, 0
}

// dirStream walks a directory of the index without copying it.
type dirStream struct {
	idx  *index.Index
	dir  index.ID
	i, n int
}

var _ = (gofs.DirStream)((*dirStream)(nil))

func (s *dirStream) HasNext() bool { return s.i < s.n }

func (s *dirStream) Next() (fuse.DirEntry, syscall.Errno) {
	name, id := s.idx.Child(s.dir, s.i)
	s.i++
	return fuse.DirEntry{Name: name, Ino: ino(id), Mode: s.idx.Mode(id)}, 0
}

func (s *dirStream) Close() {}

// symlinkNode is a symbolic link.
type symlinkNode struct {
	base
}

var _ = (gofs.NodeReadlinker)((*symlinkNode)(nil))

// Readlink returns the link target recorded in the TOC.
func (n *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	target, ok := n.t.idx.Readlink(n.id)
	if !ok {
		return nil, syscall.EINVAL
	}
	return []byte(target), 0
}
