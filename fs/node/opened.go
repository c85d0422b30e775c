package node

import (
	"sync/atomic"

	"github.com/lazysnap/lazysnap/fs/index"
)

// openedSet reports each inode's first open once: one atomic bit per inode
// keeps later opens down to a load.
type openedSet struct {
	bits  []atomic.Uint64
	first func(path string)
}

func newOpenedSet(inodes int, first func(path string)) *openedSet {
	return &openedSet{bits: make([]atomic.Uint64, (inodes+63)/64), first: first}
}

// open reports id's path (computed only then) if this is its first open.
func (s *openedSet) open(id index.ID, path func() string) {
	w, bit := &s.bits[id/64], uint64(1)<<(id%64)
	if w.Load()&bit == 0 && w.Or(bit)&bit == 0 {
		s.first(path())
	}
}
