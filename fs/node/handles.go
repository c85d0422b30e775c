package node

import (
	"context"
	"math/rand/v2"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/fs/layer"
)

// handles are the open files of one mount. A file handle (fh) carries the
// generation of the process that opened it in its high 32 bits, so that
// after a resume a handle an earlier process handed out is told from one of
// this process's: it is opened again on its first READ (stale), and its
// RELEASE releases that replacement.
type handles struct {
	t           *tree
	server      *fuse.Server // set by Init; nil when no kernel is attached (tests)
	passthrough bool
	gen         uint64

	mu    sync.Mutex
	next  uint32
	byFh  map[uint64]*fileHandle
	modes *ioModes
}

// fileHandle is an open file.
type fileHandle struct {
	fh        uint64
	f         *layer.File
	backingID int32 // of a passthrough handle
}

func newHandles(t *tree, modes *ioModes, passthrough bool) *handles {
	return &handles{
		t: t, modes: modes, passthrough: passthrough, byFh: map[uint64]*fileHandle{},
		gen: uint64(rand.Uint32()|1) << 32,
	}
}

// uniqueResend marks a request the kernel sends again (FUSE_UNIQUE_RESEND,
// Linux 6.9): one an earlier process read before it died.
const uniqueResend = 1 << 63

// open opens id for the request unique, in the mode the kernel will accept
// (see ioModes): joining the passthrough handles open on id, if any; else
// with passthrough when the cache holds the file completely, no
// cached-mode handle is open and passthrough is allowed; else in cached
// mode. A request an earlier process counted before it died is answered
// as it was counted, with that process's handle.
func (hs *handles) open(ctx context.Context, id index.ID, unique uint64) (*fileHandle, uint32, syscall.Errno) {
	if h, flags, ok := hs.reopened(id, unique); ok {
		return h, flags, 0
	}
	f, err := hs.t.layer.OpenFile(id)
	if err != nil {
		return nil, 0, hs.t.errno(ctx, "open", err)
	}
	h := &fileHandle{f: f}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	switch n := hs.modes.count(id); {
	case n < 0:
		h.backingID = hs.modes.backing(id)
	case n == 0 && hs.passthrough && hs.server != nil && f.Size() > 0 && f.Complete():
		h.backingID = hs.registerBacking(f)
	}
	h.fh = hs.gen | uint64(hs.next)
	hs.next++
	hs.modes.opened(unique, h.fh, id, h.backingID)
	hs.byFh[h.fh] = h
	return h, openFlags(h.backingID), 0
}

// reopened answers an OPEN sent again that an earlier process counted: its
// handle, not in byFh, is opened again at its first READ, like every
// handle of an earlier process (see get).
func (hs *handles) reopened(id index.ID, unique uint64) (*fileHandle, uint32, bool) {
	if unique&uniqueResend == 0 {
		return nil, 0, false
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	fh, after, ok := hs.modes.counted(unique)
	if !ok {
		return nil, 0, false
	}
	h := &fileHandle{fh: fh}
	if after.count < 0 {
		h.backingID = after.backing
	}
	hs.t.logger.Debug("an open sent again was counted before", "inode", id, "fh", fh)
	return h, openFlags(h.backingID), true
}

// openFlags are the flags of an open with backing (passthrough) or
// without. NOFLUSH: a read-only file has nothing to flush at close, and a
// close must not wait for a server that is being replaced: a process
// whose exec closes descriptors of the mount would hang in it.
func openFlags(backing int32) uint32 {
	if backing != 0 {
		return fuse.FOPEN_PASSTHROUGH | fuse.FOPEN_NOFLUSH
	}
	return fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
}

// registerBacking offers f's complete cache file to the kernel, which
// keeps its own reference: the descriptor is closed at once.
func (hs *handles) registerBacking(f *layer.File) int32 {
	bf, err := f.BackingFile()
	if err != nil {
		return 0
	}
	defer bf.Close()
	id, errno := hs.server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(bf.Fd())})
	if errno != 0 {
		// Not root, or no CONFIG_FUSE_PASSTHROUGH: plain reads from now on.
		hs.passthrough = false
		return 0
	}
	return id
}

// get returns the handle fh of id, opening again one an earlier process
// opened: the kernel reads passthrough files itself, so such a handle is a
// cached-mode one, already counted in modes.
func (hs *handles) get(ctx context.Context, id index.ID, fh uint64) (*fileHandle, syscall.Errno) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if h := hs.byFh[fh]; h != nil {
		return h, 0
	}
	if fh&^0xffffffff == hs.gen {
		return nil, syscall.EBADF // ours, released: the kernel never does that
	}
	f, err := hs.t.layer.OpenFile(id)
	if err != nil {
		return nil, hs.t.errno(ctx, "reopen", err)
	}
	h := &fileHandle{fh: fh, f: f}
	hs.byFh[fh] = h
	return h, 0
}

// release closes fh, for the request unique. A handle of an earlier
// process that was never read here has nothing to close but its count; a
// RELEASE sent again that an earlier process counted has nothing to count.
func (hs *handles) release(id index.ID, fh, unique uint64) error {
	hs.mu.Lock()
	h := hs.byFh[fh]
	delete(hs.byFh, fh)
	if !hs.countedBefore(unique) {
		// The backing ID goes back after the count is stored: a process
		// dying between the two leaves it registered, never a count
		// naming a backing ID the kernel no longer has.
		if backing := hs.modes.released(unique, fh, id); backing != 0 && hs.server != nil {
			hs.server.UnregisterBackingFd(backing)
		}
	}
	hs.mu.Unlock()
	if h == nil {
		return nil
	}
	return h.f.Close()
}

// countedBefore says whether the request unique was sent again and an
// earlier process counted it.
func (hs *handles) countedBefore(unique uint64) bool {
	if unique&uniqueResend == 0 {
		return false
	}
	_, _, ok := hs.modes.counted(unique)
	return ok
}

// closeAll closes every handle still open, at unmount.
func (hs *handles) closeAll() {
	hs.mu.Lock()
	open := hs.byFh
	hs.byFh = map[uint64]*fileHandle{}
	hs.mu.Unlock()
	for _, h := range open {
		h.f.Close()
	}
}
