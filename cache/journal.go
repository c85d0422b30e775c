package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// The presence record of an entry is an append-only journal next to its
// data file, "<hex>.ranges". We chose a per-entry journal over one bbolt
// database because a chunk write then costs one small pwrite to a file
// only that entry uses: no store-wide write lock, no fsync-per-transaction,
// and deleting an entry is deleting its files. The journal is compacted to
// one record per present span when the entry is loaded and when it becomes
// complete, so it stays tiny.
//
// Most entries, though, are small files stored whole by one write, and for
// them creating the journal was half the cost of storing the file: on ext4
// a file creation costs 130-500 µs of kernel CPU, and a profile of fused
// while a Python program started spent 56% of its CPU in os.OpenFile, half
// of it creating journals. So when one write makes an entry complete while
// it has no journal file, its presence is recorded instead as an extended
// attribute of the data file, completeXattr, whose value is the journal
// that would hold the one record [0, size): one setxattr on the open data
// file, about 2 µs, instead of a file (BenchmarkSmallEntry: 0.66 ms per
// 4 KiB file against 1.27 ms with the journal). Like a journal record, it is
// set after the data is written and not synced (see crash.go). If the
// xattr cannot be set (a file system without user xattrs, EPERM, ENOSPC,
// E2BIG: any error), the journal is written as before; it is always
// correct.
//
// The two never disagree on what counts: a journal file, when it exists,
// wins and the xattr is not read; the xattr is only written while the entry
// has no journal file, and removed before a journal file is written for an
// entry that may carry it (compactLocked) and when a fresh entry reuses a
// leftover data file (entryState.create). Loading takes the xattr only if
// its one record is [0, size) of the data file's current size.
//
// Layout: journalMagic, then records of recordSize bytes: offset and length
// (uint64, little endian) and a CRC-32C of those 16 bytes. Loading stops at
// the first short or corrupt record, so a record torn by a crash is ignored,
// never trusted.
const (
	journalMagic = "LZSRNG01"
	recordSize   = 20

	// completeXattr marks a data file whose entry one write made complete
	// while it had no journal file; see above.
	completeXattr = "user.lazysnap.complete"
	// completeSize is the size of completeXattr's value: a journal of one
	// record.
	completeSize = len(journalMagic) + recordSize
)

// checksum is CRC-32C; MakeTable returns the package's shared table for
// Castagnoli, so this allocates nothing.
func checksum(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// encodeRecord writes the journal record for s into b[:recordSize].
func encodeRecord(b []byte, s span) {
	binary.LittleEndian.PutUint64(b[0:8], uint64(s.start))
	binary.LittleEndian.PutUint64(b[8:16], uint64(s.end-s.start))
	binary.LittleEndian.PutUint32(b[16:20], checksum(b[:16]))
}

// decodeRecord returns the span of one record, or false if the record is
// corrupt or does not fit in a file of size bytes.
func decodeRecord(b []byte, size int64) (span, bool) {
	if checksum(b[:16]) != binary.LittleEndian.Uint32(b[16:20]) {
		return span{}, false
	}
	off := binary.LittleEndian.Uint64(b[0:8])
	n := binary.LittleEndian.Uint64(b[8:16])
	if n == 0 || off > uint64(size) || n > uint64(size)-off {
		return span{}, false
	}
	return span{int64(off), int64(off + n)}, true
}

// loadJournal reads the presence record at path for a file of size bytes.
// compact reports whether rewriting the journal would shrink or repair it.
// A missing journal fails with an error wrapping fs.ErrNotExist: the entry
// may then be complete by its completeXattr (hasCompleteXattr).
func loadJournal(path string, size int64) (iv intervals, compact bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return iv, false, fmt.Errorf("read presence journal: %w", err)
	}
	if len(b) < len(journalMagic) || string(b[:len(journalMagic)]) != journalMagic {
		return iv, true, nil
	}
	records := 0
	for rest := b[len(journalMagic):]; ; rest = rest[recordSize:] {
		if len(rest) < recordSize {
			// A torn tail (or a clean end) stops the load.
			compact = len(rest) != 0
			break
		}
		s, ok := decodeRecord(rest, size)
		if !ok {
			compact = true
			break
		}
		iv.add(s.start, s.end)
		records++
	}
	return iv, compact || records != len(iv.spans), nil
}

// writeJournal atomically replaces the journal at path with one record per
// span of iv. A crash before the rename leaves the old journal; a crash that
// loses the new file's contents loses presence, which only costs a refetch.
func writeJournal(path string, iv *intervals) error {
	b := make([]byte, len(journalMagic)+recordSize*len(iv.spans))
	copy(b, journalMagic)
	for i, s := range iv.spans {
		encodeRecord(b[len(journalMagic)+i*recordSize:], s)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write presence journal: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace presence journal: %w", err)
	}
	return nil
}

// journal appends records to a presence journal. Not safe for concurrent
// use; the entry's mutex guards it. A fresh entry has no journal file until
// its first record: a missing journal means nothing is present, so creating
// it with that record saves a file creation (and the temporary and rename
// of writeJournal) per entry, which on a layer of small files is most of
// the cost of storing one. An entry that one write makes complete gets no
// journal file at all (completeXattr).
type journal struct {
	path   string
	f      *os.File // nil until created or opened, and after close
	size   int64    // end of the last complete record
	closed bool
}

// openJournal opens the journal at path for appending; it must exist
// (writeJournal creates it).
func openJournal(path string) (journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return journal{}, fmt.Errorf("open presence journal: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return journal{}, fmt.Errorf("stat presence journal: %w", err)
	}
	return journal{path: path, f: f, size: fi.Size()}, nil
}

// newJournal is the journal of a fresh entry: created by its first append.
// A leftover of an entry the store forgot is removed now, so it cannot
// claim bytes of the new one.
func newJournal(path string) (journal, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return journal{}, fmt.Errorf("remove old presence journal: %w", err)
	}
	return journal{path: path}, nil
}

// append persists one span. We write at our own offset rather than with
// O_APPEND so that a failed, partial write can be cut off again: a torn
// record in the middle would hide every record after it.
func (j *journal) append(s span) error {
	if j.closed {
		return fmt.Errorf("append presence journal: %w", os.ErrClosed)
	}
	var b [len(journalMagic) + recordSize]byte
	rec := b[len(journalMagic):]
	if j.f == nil {
		// The first record creates the file, magic and record in one
		// write; a torn one reads as an empty journal.
		f, err := os.OpenFile(j.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("create presence journal: %w", err)
		}
		j.f, j.size = f, 0
		copy(b[:], journalMagic)
		rec = b[:]
	}
	encodeRecord(b[len(journalMagic):], s)
	if _, err := j.f.WriteAt(rec, j.size); err != nil {
		_ = j.f.Truncate(j.size)
		return fmt.Errorf("append presence journal: %w", err)
	}
	j.size += int64(len(rec))
	return nil
}

func (j *journal) close() error {
	j.closed = true
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

// completeValue is completeXattr's value for an entry of size bytes: the
// journal holding the one record [0, size).
func completeValue(size int64) []byte {
	b := make([]byte, completeSize)
	copy(b, journalMagic)
	encodeRecord(b[len(journalMagic):], span{0, size})
	return b
}

// hasCompleteXattr reports whether the data file at path carries a valid
// completeXattr for all of its size bytes. A missing, unreadable or corrupt
// value, or one for another span (the file's size changed), is false:
// nothing is present.
func hasCompleteXattr(path string, size int64) bool {
	// One spare byte, so a longer value reads as the wrong length; a much
	// longer one fails with ERANGE.
	var b [completeSize + 1]byte
	n, err := unix.Lgetxattr(path, completeXattr, b[:])
	if err != nil || n != completeSize || string(b[:len(journalMagic)]) != journalMagic {
		return false
	}
	s, ok := decodeRecord(b[len(journalMagic):completeSize], size)
	return ok && s == span{0, size}
}

// setCompleteXattr sets completeXattr on the open data file f. A variable
// so that tests can play a file system without user xattrs.
var setCompleteXattr = func(f *os.File, value []byte) error {
	if err := unix.Fsetxattr(int(f.Fd()), completeXattr, value, 0); err != nil {
		return fmt.Errorf("set %s: %w", completeXattr, err)
	}
	return nil
}

// removeCompleteXattr removes completeXattr from the open data file f. A
// file without it (ENODATA), or on a file system without user xattrs,
// which cannot carry it, is not an error.
func removeCompleteXattr(f *os.File) error {
	err := unix.Fremovexattr(int(f.Fd()), completeXattr)
	if err == nil || errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	return fmt.Errorf("remove %s: %w", completeXattr, err)
}
