package cache

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireUserXattrs skips the test where dir's file system has no user
// xattrs: there the store always writes journals, which
// TestNoUserXattrsFallsBackToJournal covers everywhere.
func requireUserXattrs(t *testing.T, dir string) {
	t.Helper()
	probe := filepath.Join(dir, "xattr-probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(probe)
	if err := unix.Lsetxattr(probe, "user.lazysnap.probe", []byte("1"), 0); err != nil {
		t.Skipf("no user xattrs in %s: %v", dir, err)
	}
}

// completeXattrOf returns the data file's completeXattr, or nil if it has
// none.
func completeXattrOf(t *testing.T, path string) []byte {
	t.Helper()
	b := make([]byte, 256)
	n, err := unix.Lgetxattr(path, completeXattr, b)
	if errors.Is(err, unix.ENODATA) {
		return nil
	}
	if err != nil {
		t.Fatalf("getxattr %s: %v", path, err)
	}
	return b[:n]
}

func noJournal(t *testing.T, st *entryState) {
	t.Helper()
	if _, err := os.Stat(st.journalPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("journal stat: %v, want no journal file", err)
	}
}

// TestCompleteXattr: a file stored whole by one write gets no journal
// file, its presence is the data file's xattr, and a restart loads it as
// present (not verified).
func TestCompleteXattr(t *testing.T) {
	dir := t.TempDir()
	requireUserXattrs(t, dir)
	s := openStore(t, dir)
	c := newContent(t, 4096)
	e, err := s.Entry(c.d, 4096)
	if err != nil {
		t.Fatal(err)
	}
	write(t, e, c, 0, 4096)
	st := e.state
	noJournal(t, st)
	if got := completeXattrOf(t, st.dataPath()); !bytes.Equal(got, completeValue(4096)) {
		t.Fatalf("xattr = %x, want %x", got, completeValue(4096))
	}
	// Reopening the entry (not the store) opens no journal either.
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = s.Entry(c.d, 4096)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, e, c)
	write(t, e, c, 0, 4096) // complete: appends nothing
	noJournal(t, st)

	s, e = reopen(t, dir, s, e, c)
	if st := s.Stats(); st.Entries != 1 || st.Bytes != 4096 {
		t.Errorf("after reopen Stats = %+v, want 1 entry of 4096 bytes", st)
	}
	if !e.Complete() {
		t.Fatal("entry complete by xattr not loaded as complete")
	}
	if e.Verified(0, 1) {
		t.Error("bytes loaded from the xattr count as verified")
	}
	readAll(t, e, c)
	noJournal(t, e.state)
}

// TestTwoWritesUseJournal: an entry completed by two writes records its
// presence in the journal, as before, and carries no xattr.
func TestTwoWritesUseJournal(t *testing.T) {
	dir := t.TempDir()
	requireUserXattrs(t, dir)
	s := openStore(t, dir)
	c := newContent(t, 4096)
	e, err := s.Entry(c.d, 4096)
	if err != nil {
		t.Fatal(err)
	}
	write(t, e, c, 0, 1000)
	write(t, e, c, 1000, 4096)
	st := e.state
	if fi, err := os.Stat(st.journalPath()); err != nil || fi.Size() != int64(completeSize) {
		t.Errorf("journal: %v, %v; want one record", fi, err)
	}
	if got := completeXattrOf(t, st.dataPath()); got != nil {
		t.Errorf("entry completed by two writes has xattr %x", got)
	}
	s, e = reopen(t, dir, s, e, c)
	if !e.Complete() {
		t.Fatal("entry not complete after reopen")
	}
	readAll(t, e, c)
}

// TestDiscardCompleteXattr: discarding bytes of an entry complete by its
// xattr writes a journal and removes the xattr first, so that the bytes
// stay discarded after a restart, even if the journal never made it to
// disk.
func TestDiscardCompleteXattr(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := map[bool]string{false: "journal written", true: "crash before the journal"}[crash]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			requireUserXattrs(t, dir)
			s := openStore(t, dir)
			c := newContent(t, 1000)
			e, err := s.Entry(c.d, 1000)
			if err != nil {
				t.Fatal(err)
			}
			write(t, e, c, 0, 1000)
			if completeXattrOf(t, e.state.dataPath()) == nil {
				t.Fatal("no xattr after one whole write")
			}
			s, e = reopen(t, dir, s, e, c) // so the bytes are unverified
			if n, err := e.Discard(100, 200); err != nil || n != 200 {
				t.Fatalf("Discard = %d, %v; want 200 bytes", n, err)
			}
			st := e.state
			if got := completeXattrOf(t, st.dataPath()); got != nil {
				t.Errorf("xattr %x left after Discard", got)
			}
			if crash {
				// The journal's rename never happened.
				if err := os.Remove(st.journalPath()); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dir)
			if crash {
				if st := s.Stats(); st.Entries != 0 {
					t.Fatalf("Stats = %+v, want the entry dropped: neither journal nor xattr", st)
				}
				return
			}
			e = openEntry(t, s, c)
			if e.Has(100, 1) || e.Has(299, 1) || !e.Has(0, 100) || !e.Has(300, 700) {
				t.Error("discarded range present again after reopen")
			}
			// Written again, the entry is complete by its journal.
			write(t, e, c, 100, 300)
			s, e = reopen(t, dir, s, e, c)
			if !e.Complete() {
				t.Fatal("rewritten range lost")
			}
			readAll(t, e, c)
		})
	}
}

// TestLeftoverXattrNotClaimed: the data file of an entry the store forgot,
// carrying the xattr, cannot claim bytes of a fresh entry of the same
// digest (O_TRUNC keeps xattrs).
func TestLeftoverXattrNotClaimed(t *testing.T) {
	dir := t.TempDir()
	requireUserXattrs(t, dir)
	s := openStore(t, dir)
	c := newContent(t, 4096)
	st := newEntryState(dir, c.d, 4096)
	if err := os.MkdirAll(filepath.Dir(st.dataPath()), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st.dataPath(), c.data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(st.dataPath(), completeXattr, completeValue(4096), 0); err != nil {
		t.Fatal(err)
	}

	e, err := s.Entry(c.d, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if e.Has(0, 1) {
		t.Error("fresh entry claims bytes")
	}
	if got := completeXattrOf(t, st.dataPath()); got != nil {
		t.Errorf("leftover xattr %x kept by a fresh entry", got)
	}
	// Closed with nothing written: a restart must not find the entry
	// complete (its file is all holes).
	e.Close()
	s.Close()
	s = openStore(t, dir)
	if st := s.Stats(); st.Entries != 0 {
		t.Errorf("Stats = %+v after reopen, want no entry", st)
	}
}

// TestCorruptCompleteXattr: an xattr that is not a valid record of
// [0, size) of the data file loads nothing; the entry is dropped.
func TestCorruptCompleteXattr(t *testing.T) {
	const size = 1000
	flipped := completeValue(size)
	flipped[len(journalMagic)+3] ^= 0xff
	badMagic := completeValue(size)
	badMagic[0] = 'X'
	part := make([]byte, completeSize)
	copy(part, journalMagic)
	encodeRecord(part[len(journalMagic):], span{0, size - 1})
	tail := make([]byte, completeSize)
	copy(tail, journalMagic)
	encodeRecord(tail[len(journalMagic):], span{1, size})
	for _, tt := range []struct {
		name  string
		value []byte
		size  int64 // the data file's size at load, if changed
	}{
		{"flipped bit", flipped, 0},
		{"bad magic", badMagic, 0},
		{"short", completeValue(size)[:completeSize-1], 0},
		{"long", append(completeValue(size), 0), 0},
		{"much longer", bytes.Repeat(completeValue(size), 10), 0},
		{"empty", []byte{}, 0},
		{"prefix only", part, 0},
		{"not from 0", tail, 0},
		{"file grew", completeValue(size), size + 1},
		{"file shrank", completeValue(size), size - 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			requireUserXattrs(t, dir)
			s := openStore(t, dir)
			c := newContent(t, size)
			fill(t, s, c)
			path := filepath.Join(dir, "files", "sha256", c.d.Encoded())
			if completeXattrOf(t, path) == nil {
				t.Fatal("no xattr after one whole write")
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lsetxattr(path, completeXattr, tt.value, 0); err != nil {
				t.Fatal(err)
			}
			if tt.size != 0 {
				if err := os.Truncate(path, tt.size); err != nil {
					t.Fatal(err)
				}
			}
			s = openStore(t, dir)
			if st := s.Stats(); st.Entries != 0 || st.Bytes != 0 {
				t.Errorf("Stats = %+v, want no entry", st)
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("data file of the dropped entry: stat %v, want removed", err)
			}
		})
	}
}

// TestNoUserXattrsFallsBackToJournal: where the xattr cannot be set (a
// file system without user xattrs), a whole write records its presence in
// the journal.
func TestNoUserXattrsFallsBackToJournal(t *testing.T) {
	set := setCompleteXattr
	t.Cleanup(func() { setCompleteXattr = set })
	setCompleteXattr = func(*os.File, []byte) error { return unix.ENOTSUP }

	dir := t.TempDir()
	s := openStore(t, dir)
	c := newContent(t, 4096)
	e, err := s.Entry(c.d, 4096)
	if err != nil {
		t.Fatal(err)
	}
	write(t, e, c, 0, 4096)
	st := e.state
	if fi, err := os.Stat(st.journalPath()); err != nil || fi.Size() != int64(completeSize) {
		t.Errorf("journal: %v, %v; want one record", fi, err)
	}
	s, e = reopen(t, dir, s, e, c)
	if !e.Complete() {
		t.Fatal("entry not complete after reopen")
	}
	readAll(t, e, c)
}

// TestCompleteXattrLRUAge: an entry without journal ages from its data
// file's last write when a restart rebuilds the LRU order.
func TestCompleteXattrLRUAge(t *testing.T) {
	dir := t.TempDir()
	requireUserXattrs(t, dir)
	s := openStore(t, dir)
	older, newer := newContent(t, 100), newContent(t, 100)
	fill(t, s, newer)
	fill(t, s, older)
	s.Close()
	now := time.Now()
	for c, age := range map[*content]time.Duration{&older: 2 * time.Hour, &newer: time.Hour} {
		path := filepath.Join(dir, "files", "sha256", c.d.Encoded())
		if err := os.Chtimes(path, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	s = openStore(t, dir, WithMaxBytes(150))
	if exists(t, s, older) || !exists(t, s, newer) {
		t.Error("restart did not evict the entry written longest ago")
	}
}
