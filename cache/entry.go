package cache

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// entryState is the state all handles of one digest share.
type entryState struct {
	digest digest.Digest
	size   int64
	dir    string // the store's directory, shared by every entry

	// Guarded by Store.mu. data is opened when refs goes from 0 to 1;
	// handles use it without locks since it cannot change while they are
	// open.
	refs  int
	elem  *list.Element
	bytes int64 // present bytes as accounted by the store
	data  *os.File

	mu      sync.Mutex // guards present, verified and journal
	present intervals
	// verified are the present bytes this process wrote or checked, a
	// subset of present. It lives in memory only: bytes on disk from an
	// earlier run may have rotted since, so they are checked once again.
	verified intervals
	journal  journal
}

func newEntryState(dir string, d digest.Digest, size int64) *entryState {
	return &entryState{digest: d, size: size, dir: dir}
}

// dataPath and journalPath are built when needed rather than kept: a node
// holds an entry for every file of every mounted layer, and two paths each
// cost more than the rest of the entry.
func (st *entryState) dataPath() string {
	return filepath.Join(st.dir, "files", string(st.digest.Algorithm()), st.digest.Encoded())
}

func (st *entryState) journalPath() string { return st.dataPath() + ".ranges" }

// create makes a fresh sparse data file, opened, and the journal its
// first write creates (see journal), unless that write makes the entry
// complete (see markPresent). Leftovers of an entry the store forgot are
// overwritten.
func (st *entryState) create() error {
	f, err := os.OpenFile(st.dataPath(), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create data file: %w", err)
	}
	// O_TRUNC keeps a leftover data file's xattrs: a completeXattr of the
	// forgotten entry would claim every byte of this one (as long as no
	// journal file wins over it), so it goes now, as newJournal removes a
	// leftover journal. A crash between the truncation and the removal
	// leaves a claim on holes, which reads as zeros: loaded bytes are hashed
	// before first use (see verified), so that costs a refetch.
	if err := removeCompleteXattr(f); err != nil {
		f.Close()
		return fmt.Errorf("create data file: %w", err)
	}
	// Truncate allocates nothing: the file is all holes until chunks land.
	if err := f.Truncate(st.size); err != nil {
		f.Close()
		return fmt.Errorf("size data file: %w", err)
	}
	j, err := newJournal(st.journalPath())
	if err != nil {
		f.Close()
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.data, st.journal = f, j
	return nil
}

// openFiles opens the data file and journal for the first handle. An entry
// with nothing present may have no journal yet, and neither has a complete
// one whose presence is its data file's completeXattr.
func (st *entryState) openFiles() error {
	f, err := os.OpenFile(st.dataPath(), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open data file: %w", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.journal, err = openJournal(st.journalPath())
	if errors.Is(err, fs.ErrNotExist) {
		switch st.present.bytes {
		case 0:
			st.journal, err = newJournal(st.journalPath())
		case st.size:
			// Complete by its completeXattr (one write, this run or loaded):
			// the journal is opened lazily, without a file, like a fresh
			// one. A complete entry appends nothing (markPresent returns
			// before), and a discard writes a journal file, removing the
			// xattr first (compactLocked).
			st.journal, err = journal{path: st.journalPath()}, nil
		}
	}
	if err != nil {
		f.Close()
		return err
	}
	st.data = f
	return nil
}

// closeFiles closes the files when the last handle goes.
func (st *entryState) closeFiles() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	// data keeps pointing at the closed file: handles that outlive a Store
	// Close read it without locks and must get os.ErrClosed, not a race.
	return errors.Join(st.journal.close(), st.data.Close())
}

// remove deletes the entry's files. Missing files are not an error.
func (st *entryState) remove() error {
	var errs []error
	for _, p := range []string{st.journalPath(), st.dataPath()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// markPresent records [start, end) in the journal and then in memory, as
// present and verified, and returns how many bytes became present. Once the
// entry is complete, the journal is compacted to one record.
func (st *entryState) markPresent(start, end int64) (int64, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.present.contains(start, end) {
		// Fresh verified bytes may overwrite bytes loaded unverified.
		st.verified.add(start, end)
		return 0, nil
	}
	if start == 0 && end == st.size && st.present.bytes == 0 && st.journal.f == nil && !st.journal.closed {
		// One write made the entry complete and it has no journal file
		// (a fresh entry's is created by its first append; newJournal
		// removed any leftover): record that as the data file's
		// completeXattr rather than create a journal, a file creation
		// saved per small file. As with the journal, the data was written
		// first (WriteAt). The xattr is only ever written while there is
		// no journal file, so the two cannot disagree; on any error (no
		// user xattrs, ENOSPC, E2BIG) the journal below records it, and a
		// journal, when it exists, wins over the xattr.
		if setCompleteXattr(st.data, completeValue(st.size)) == nil {
			added := st.present.add(start, end)
			st.verified.add(start, end)
			return added, nil
		}
	}
	if err := st.journal.append(span{start, end}); err != nil {
		return 0, err
	}
	added := st.present.add(start, end)
	st.verified.add(start, end)
	if st.present.bytes == st.size && st.journal.size > int64(len(journalMagic)+recordSize) {
		// Compaction only saves space: on failure the long journal stays
		// valid, and a complete entry appends nothing more.
		_ = st.compactLocked()
	}
	return added, nil
}

// compactLocked replaces the journal file with one record per present span.
func (st *entryState) compactLocked() error {
	// The entry may carry a completeXattr (one write completed it): remove
	// it before writing the journal file. The journal wins once it exists,
	// but if writing it fails, or a crash comes before its rename, the next
	// load would find no journal and take the xattr's "complete", bringing
	// a discarded (bad) range back as present. If the removal fails, the
	// journal is still written, since it wins; the error is returned.
	rmErr := removeCompleteXattr(st.data)
	if err := writeJournal(st.journalPath(), &st.present); err != nil {
		return errors.Join(rmErr, err)
	}
	j, err := openJournal(st.journalPath())
	if err != nil {
		return err
	}
	st.journal.close()
	st.journal = j
	return rmErr
}

// has reports whether [start, end) is present.
func (st *entryState) has(start, end int64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.present.contains(start, end)
}

// isVerified reports whether [start, end) is present and verified.
func (st *entryState) isVerified(start, end int64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.verified.contains(start, end)
}

// markVerified records that the present bytes [start, end) were checked.
// It reports false, recording nothing, if part of the range is no longer
// present: another reader discarded it meanwhile.
func (st *entryState) markVerified(start, end int64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.present.contains(start, end) {
		return false
	}
	st.verified.add(start, end)
	return true
}

// discard forgets the unverified present bytes of [start, end), in memory
// and then in the journal, and returns how many there were.
//
// Verified bytes are kept: they were written or checked by this process,
// and a reader may be about to return them. Then the journal is rewritten
// whole (atomically, see writeJournal) rather than given a removal record,
// so its format stays "present spans" only. A crash before the rename
// leaves the old journal, which claims the bad bytes again; the next run
// checks them before use, as it checks everything it loads, and discards
// them again. If the rewrite fails, memory and journal disagree the same
// way, with the same outcome. An entry complete by its completeXattr has
// no old journal: the xattr is removed first (compactLocked), so a crash
// in between leaves nothing present, which costs a refetch.
//
// The data file is left as it is rather than punched: the bytes are no
// longer claimed and the refetch that follows overwrites them, while a
// punch could race with a WriteAt of the same range, whose data lands
// before its presence is recorded and outside this lock.
func (st *entryState) discard(start, end int64) (int64, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.journal.closed {
		// The store was closed under the handle: rewriting the journal
		// now would leave it open.
		return 0, os.ErrClosed
	}
	var removed int64
	for _, g := range st.verified.gaps(start, end) {
		removed += st.present.remove(g.start, g.end)
	}
	if removed == 0 {
		return 0, nil
	}
	return removed, st.compactLocked()
}

// Entry is one cached file. Safe for concurrent use.
type Entry struct {
	store  *Store
	state  *entryState
	closed atomic.Bool
}

// clampEnd returns the end of [off, off+n) cut at size, without overflow.
func clampEnd(off, n, size int64) int64 {
	if n > size-off {
		return size
	}
	return off + n
}

// Has reports whether [off, off+n) is fully present. The range is cut at the
// end of the file, so Has is true exactly when ReadAt of the range would not
// fail with ErrNotPresent.
func (e *Entry) Has(off, n int64) bool {
	st := e.state
	if e.closed.Load() || off < 0 || n < 0 {
		return false
	}
	if off >= st.size {
		return true
	}
	if !st.has(off, clampEnd(off, n, st.size)) {
		e.store.misses.Add(1)
		return false
	}
	return true
}

// Verified reports whether [off, off+n) is fully present and was written
// (WriteAt) or checked (MarkVerified) by this process. Bytes loaded from an
// earlier run are present but not verified. Like Has, the range is cut at
// the end of the file. Unlike Has, a false answer counts no miss.
func (e *Entry) Verified(off, n int64) bool {
	st := e.state
	if e.closed.Load() || off < 0 || n < 0 {
		return false
	}
	if off >= st.size {
		return true
	}
	return st.isVerified(off, clampEnd(off, n, st.size))
}

// MarkVerified records that the caller checked the present bytes
// [off, off+n) against their digest. It reports false, recording nothing,
// if the range is not (or no longer) fully present.
func (e *Entry) MarkVerified(off, n int64) bool {
	st := e.state
	if e.closed.Load() || off < 0 || n < 0 {
		return false
	}
	if off >= st.size {
		return true
	}
	return st.markVerified(off, clampEnd(off, n, st.size))
}

// Discard marks the bytes of [off, off+n) that are present but not
// verified as missing, in memory and in the persisted record, for a caller
// that found them corrupt. It returns how many bytes it dropped: 0 when
// another reader dropped or rewrote them first. The caller fetches the
// range again as it would any missing range.
func (e *Entry) Discard(off, n int64) (int64, error) {
	st := e.state
	if e.closed.Load() {
		return 0, fmt.Errorf("cache: discard %s: %w", st.digest, os.ErrClosed)
	}
	if off < 0 || n < 0 {
		return 0, fmt.Errorf("cache: discard %s [%d, +%d): %w", st.digest, off, n, errdefs.ErrInvalidArgument)
	}
	if off >= st.size {
		return 0, nil
	}
	removed, err := st.discard(off, clampEnd(off, n, st.size))
	if removed > 0 {
		e.store.account(st, -removed)
	}
	if err != nil {
		return removed, fmt.Errorf("cache: discard %s [%d, +%d): %w", st.digest, off, n, err)
	}
	return removed, nil
}

// ReadAt reads present bytes. Reading a range that is not present is an
// error (ErrNotPresent), never zeros. Like os.File.ReadAt, it returns io.EOF
// with fewer bytes than asked when the range passes the end of the file.
func (e *Entry) ReadAt(p []byte, off int64) (int, error) {
	st := e.state
	if e.closed.Load() {
		return 0, fmt.Errorf("cache: read %s: %w", st.digest, os.ErrClosed)
	}
	if off < 0 {
		return 0, fmt.Errorf("cache: read %s at %d: negative offset: %w", st.digest, off, errdefs.ErrInvalidArgument)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= st.size {
		return 0, io.EOF
	}
	end := clampEnd(off, int64(len(p)), st.size)
	if !st.has(off, end) {
		return 0, fmt.Errorf("cache: read %s [%d, %d): %w: %w", st.digest, off, end, ErrNotPresent, errdefs.ErrNotFound)
	}
	n, err := st.data.ReadAt(p[:end-off], off)
	if err != nil {
		return n, fmt.Errorf("cache: read %s at %d: %w", st.digest, off, err)
	}
	e.store.hits.Add(1)
	if end-off < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt stores verified bytes at off and then marks them present and
// verified. The presence record is persisted so a restarted daemon finds
// them; that they were verified is not.
//
// A full disk fails with an error wrapping errdefs.ErrResourceExhausted and
// syscall.ENOSPC, and the range stays absent.
func (e *Entry) WriteAt(p []byte, off int64) error {
	st := e.state
	if e.closed.Load() {
		return fmt.Errorf("cache: write %s: %w", st.digest, os.ErrClosed)
	}
	if off < 0 || int64(len(p)) > st.size-off {
		return fmt.Errorf("cache: write %s [%d, +%d) outside file of %d bytes: %w",
			st.digest, off, len(p), st.size, errdefs.ErrInvalidArgument)
	}
	if len(p) == 0 {
		return nil
	}
	end := off + int64(len(p))
	// Data first, presence second: a crash in between leaves bytes on disk
	// that nothing claims, never a claim without bytes.
	if _, err := st.data.WriteAt(p, off); err != nil {
		return writeError(st.digest, off, end, err)
	}
	added, err := st.markPresent(off, end)
	if err != nil {
		return writeError(st.digest, off, end, err)
	}
	if added > 0 {
		e.store.account(st, added)
	}
	return nil
}

func writeError(d digest.Digest, off, end int64, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("cache: write %s [%d, %d): disk full: %w: %w", d, off, end, errdefs.ErrResourceExhausted, err)
	}
	return fmt.Errorf("cache: write %s [%d, %d): %w", d, off, end, err)
}

// Complete reports whether every byte of the file is present.
func (e *Entry) Complete() bool {
	st := e.state
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.present.bytes == st.size
}

// File returns the backing file, read-only, for passthrough once every
// byte is present and verified (Verified(0, size)). The caller closes it.
// It fails with ErrNotPresent (and errdefs.ErrFailedPrecondition) if the
// entry is not complete, since the holes would read as zeros, and with
// errdefs.ErrFailedPrecondition if some bytes are not verified yet: the
// kernel reads the file without asking us, so nothing could check them.
func (e *Entry) File() (*os.File, error) {
	st := e.state
	if e.closed.Load() {
		return nil, fmt.Errorf("cache: file %s: %w", st.digest, os.ErrClosed)
	}
	if !e.Complete() {
		return nil, fmt.Errorf("cache: file %s is incomplete: %w: %w", st.digest, ErrNotPresent, errdefs.ErrFailedPrecondition)
	}
	if !e.Verified(0, st.size) {
		return nil, fmt.Errorf("cache: file %s is not verified yet: %w", st.digest, errdefs.ErrFailedPrecondition)
	}
	f, err := os.Open(st.dataPath())
	if err != nil {
		return nil, fmt.Errorf("cache: file %s: %w", st.digest, err)
	}
	return f, nil
}

// Close releases the caller's handle. Closing twice is an error.
func (e *Entry) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("cache: close %s: %w", e.state.digest, os.ErrClosed)
	}
	if err := e.store.release(e.state); err != nil {
		return fmt.Errorf("cache: close %s: %w", e.state.digest, err)
	}
	return nil
}
