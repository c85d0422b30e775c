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
//
// The counts must also survive a process killed between counting an OPEN
// or RELEASE and replying to it: the kernel sends such a request again to
// the process that resumes (FUSE_NOTIFY_RESEND), which must not count it a
// second time (a count one too low let an open in the other mode through,
// and the kernel failed it with EIO). So every change is one store of the
// inode's 64-bit entry, recorded in a journal of the latest changes kept
// in the same memfd (see journal); a request sent again is looked up
// there, and answered as it was counted.
//
// Callers serialise the changes (handles.mu): the journal relies on at
// most one change being half done when a process dies.
type ioModes struct {
	file    *os.File
	mem     []byte
	entries []atomic.Uint64 // one per inode: modeEntry's count and backing ID
	journal journal
}

// ioModeBytes is the size of one inode's entry.
const ioModeBytes = 8

// modeEntry is one inode's entry: the count, then the backing ID, each 32
// bits in the machine's order, as the table has always been laid out (a
// process of an earlier version may hand it over).
type modeEntry struct{ count, backing int32 }

func (e modeEntry) word() uint64 { return *(*uint64)(unsafe.Pointer(&e)) }

func entryOf(w uint64) modeEntry { return *(*modeEntry)(unsafe.Pointer(&w)) }

// tableBytes is the size of the table of n inodes, journal included.
func tableBytes(n int) int { return countBytes(n) + journalBytes }

func countBytes(n int) int { return max(n, 1) * ioModeBytes }

// newIOModes creates the counts of n inodes, all zero.
func newIOModes(n int) (*ioModes, error) {
	fd, err := unix.MemfdCreate("lazysnap-iomodes", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating the open-mode table: %w", err)
	}
	f := os.NewFile(uintptr(fd), "lazysnap-iomodes")
	if err := f.Truncate(int64(tableBytes(n))); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing the open-mode table: %w", err)
	}
	return mapIOModes(f, n)
}

// mapIOModes maps the counts of n inodes kept in f, which it takes, and
// settles the change a dead process left half done. A table of counts
// only (handed over by a version without the journal) gains an empty one.
func mapIOModes(f *os.File, n int) (*ioModes, error) {
	size, err := tableSize(f, n)
	if err != nil {
		f.Close()
		return nil, err
	}
	if size < int64(tableBytes(n)) {
		f.Close()
		return nil, fmt.Errorf("open-mode table of %d bytes too small for %d inodes", size, n)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, tableBytes(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mapping the open-mode table: %w", err)
	}
	words := unsafe.Slice((*atomic.Uint64)(unsafe.Pointer(&mem[0])), len(mem)/8)
	m := &ioModes{file: f, mem: mem, entries: words[:n:n], journal: journal(words[countBytes(n)/8:])}
	m.journal.settle(m.entries)
	return m, nil
}

// tableSize returns the size of the table in f, growing a table of counts
// only (an earlier version's) to hold the journal.
func tableSize(f *os.File, n int) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("open-mode table: %w", err)
	}
	if st.Size() != int64(countBytes(n)) {
		return st.Size(), nil
	}
	if err := f.Truncate(int64(tableBytes(n))); err != nil {
		return 0, fmt.Errorf("growing an open-mode table of counts only: %w", err)
	}
	return int64(tableBytes(n)), nil
}

func (m *ioModes) entry(id index.ID) modeEntry { return entryOf(m.entries[id].Load()) }

// count is the number of id's handles: positive in cached mode, negative
// in passthrough mode.
func (m *ioModes) count(id index.ID) int32 { return m.entry(id).count }

// backing is the backing ID of id's passthrough handles.
func (m *ioModes) backing(id index.ID) int32 { return m.entry(id).backing }

// opened counts a new handle fh of id, for the request unique: cached, or
// passthrough with backing.
func (m *ioModes) opened(unique, fh uint64, id index.ID, backing int32) {
	e := m.entry(id)
	if backing == 0 {
		e.count++
	} else {
		e.count--
		e.backing = backing
	}
	m.set(unique, fh, id, e)
}

// released counts one handle of id fewer, whichever its mode, for the
// request unique, and returns the backing ID to unregister when it was
// id's last passthrough handle.
func (m *ioModes) released(unique, fh uint64, id index.ID) (unregister int32) {
	e := m.entry(id)
	switch {
	case e.count > 0:
		e.count--
	case e.count == -1:
		unregister, e.backing = e.backing, 0
		e.count++
	case e.count < 0:
		e.count++
	}
	m.set(unique, fh, id, e)
	return unregister
}

// set changes id's entry to e, journaled.
func (m *ioModes) set(unique, fh uint64, id index.ID, e modeEntry) {
	prev := m.entries[id].Load()
	done := m.journal.begin(unique, fh, id, prev, e.word())
	m.entries[id].Store(e.word())
	done()
}

// counted looks up a request the kernel sent again: whether an earlier
// process counted it, and then its handle and the entry it left.
func (m *ioModes) counted(unique uint64) (fh uint64, after modeEntry, ok bool) {
	fh, w, ok := m.journal.lookup(unique)
	return fh, entryOf(w), ok
}

func (m *ioModes) close() error {
	err := unix.Munmap(m.mem)
	return errors.Join(err, m.file.Close())
}

// journal is a ring of the latest changes of the counts: a cursor word,
// then journalSlots records of five words (tag, fh, inode, entry before,
// entry after). The tag is the request's unique, with pendingBit set from
// before the entry is stored until after. A request is answered after its
// change, so the ring only has to hold the changes of the requests in
// flight when a process dies: a few per reader thread.
type journal []atomic.Uint64

const (
	journalSlots = 512
	slotWords    = 5
	journalBytes = 8 * (1 + journalSlots*slotWords)
	pendingBit   = 1 << 63
)

func (j journal) slot(i int) []atomic.Uint64 {
	return j[1+i*slotWords : 1+(i+1)*slotWords]
}

// begin records the change of id's entry from prev to next for the
// request unique, and returns the function that marks it done.
func (j journal) begin(unique, fh uint64, id index.ID, prev, next uint64) (done func()) {
	i := int(j[0].Add(1) % journalSlots)
	s := j.slot(i)
	s[0].Store(0) // no lookup may take a half-written record
	s[1].Store(fh)
	s[2].Store(uint64(id))
	s[3].Store(prev)
	s[4].Store(next)
	tag := unique &^ uniqueResend
	s[0].Store(tag | pendingBit)
	return func() { s[0].Store(tag) }
}

// settle completes or undoes the record a dead process left pending: the
// change was made if the entry holds its result.
func (j journal) settle(entries []atomic.Uint64) {
	for i := range journalSlots {
		s := j.slot(i)
		tag := s[0].Load()
		if tag&pendingBit == 0 {
			continue
		}
		id, next := s[2].Load(), s[4].Load()
		if id < uint64(len(entries)) && entries[id].Load() == next {
			s[0].Store(tag &^ pendingBit)
		} else {
			s[0].Store(0)
		}
	}
}

// lookup finds the change of the request unique.
func (j journal) lookup(unique uint64) (fh, after uint64, ok bool) {
	tag := unique &^ uniqueResend
	if tag == 0 {
		return 0, 0, false
	}
	for i := range journalSlots {
		s := j.slot(i)
		if s[0].Load() == tag {
			return s[1].Load(), s[4].Load(), true
		}
	}
	return 0, 0, false
}
