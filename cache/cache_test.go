package cache

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// content is a test file: random bytes and their digest.
type content struct {
	data []byte
	d    digest.Digest
}

func newContent(t testing.TB, size int) content {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	return content{data: b, d: digest.FromBytes(b)}
}

func openStore(t testing.TB, dir string, opts ...Option) *Store {
	t.Helper()
	opts = append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	s, err := Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openEntry(t testing.TB, s *Store, c content) *Entry {
	t.Helper()
	e, err := s.Entry(c.d, int64(len(c.data)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func write(t testing.TB, e *Entry, c content, off, end int) {
	t.Helper()
	if err := e.WriteAt(c.data[off:end], int64(off)); err != nil {
		t.Fatalf("WriteAt [%d, %d): %v", off, end, err)
	}
}

// readAll reads the whole entry and fails the test unless it matches c.
func readAll(t testing.TB, e *Entry, c content) {
	t.Helper()
	got := make([]byte, len(c.data))
	n, err := e.ReadAt(got, 0)
	if err != nil || n != len(got) {
		t.Fatalf("ReadAt whole entry = %d, %v; want %d, nil", n, err, len(got))
	}
	if !bytes.Equal(got, c.data) {
		t.Fatal("ReadAt returned other bytes than written")
	}
}

func TestPresence(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := newContent(t, 1000)
	e := openEntry(t, s, c)

	write(t, e, c, 100, 200)
	write(t, e, c, 150, 300) // overlaps
	write(t, e, c, 500, 600)
	checks := []struct {
		off, n int64
		want   bool
	}{
		{100, 200, true}, {120, 10, true}, {0, 100, false}, {250, 100, false},
		{500, 100, true}, {299, 2, false}, {100, 500, false},
		{950, 1000, false}, // clamped to [950, 1000), missing
		{1000, 10, true},   // past the end: nothing to miss
		{-1, 5, false},
	}
	for _, c := range checks {
		if got := e.Has(c.off, c.n); got != c.want {
			t.Errorf("Has(%d, %d) = %v, want %v", c.off, c.n, got, c.want)
		}
	}
	if e.Complete() {
		t.Error("Complete with holes")
	}
	if got := s.Stats().Bytes; got != 300 {
		t.Errorf("Stats.Bytes = %d, want 300 (overlap counted once)", got)
	}

	write(t, e, c, 0, 100)
	write(t, e, c, 300, 500)
	write(t, e, c, 600, 1000)
	if !e.Complete() {
		t.Error("not Complete after writing every byte")
	}
	readAll(t, e, c)
}

func TestReadAtMissingRange(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := newContent(t, 1000)
	e := openEntry(t, s, c)
	write(t, e, c, 0, 500)

	p := make([]byte, 100)
	n, err := e.ReadAt(p, 450) // half present
	if !errors.Is(err, ErrNotPresent) || !errdefs.IsNotFound(err) {
		t.Fatalf("ReadAt of partly missing range: err = %v, want ErrNotPresent", err)
	}
	if n != 0 {
		t.Errorf("ReadAt of missing range returned %d bytes", n)
	}
	if e.Has(450, 100) || s.Stats().Misses != 1 {
		t.Errorf("Has = true or Misses = %d, want false and 1", s.Stats().Misses)
	}
	if n, err := e.ReadAt(p, 100); err != nil || n != 100 || !bytes.Equal(p, c.data[100:200]) {
		t.Errorf("ReadAt of present range = %d, %v", n, err)
	}
	if got := s.Stats().Hits; got != 1 {
		t.Errorf("Hits = %d, want 1", got)
	}
}

func TestReadAtEOF(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := newContent(t, 100)
	e := openEntry(t, s, c)
	write(t, e, c, 0, 100)

	p := make([]byte, 30)
	n, err := e.ReadAt(p, 80)
	if n != 20 || err != io.EOF || !bytes.Equal(p[:n], c.data[80:]) {
		t.Errorf("ReadAt across the end = %d, %v; want 20, io.EOF", n, err)
	}
	if n, err := e.ReadAt(p, 100); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v; want 0, io.EOF", n, err)
	}
	if err := e.WriteAt(p, 80); !errdefs.IsInvalidArgument(err) {
		t.Errorf("WriteAt past the end: err = %v, want invalid argument", err)
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c := newContent(t, 4096)
	e, err := s.Entry(c.d, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < 2048; off += 512 { // several journal records
		write(t, e, c, off, off+512)
	}
	write(t, e, c, 3000, 3100)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	if st := s.Stats(); st.Entries != 1 || st.Bytes != 2148 {
		t.Errorf("after reopen Stats = %+v, want 1 entry, 2148 bytes", st)
	}
	e = openEntry(t, s, c)
	if !e.Has(0, 2048) || !e.Has(3000, 100) || e.Has(2048, 1) {
		t.Error("presence not restored")
	}
	p := make([]byte, 2048)
	if _, err := e.ReadAt(p, 0); err != nil || !bytes.Equal(p, c.data[:2048]) {
		t.Errorf("ReadAt after reopen: %v", err)
	}
	// Loading compacted the journal to one record per span.
	fi, err := os.Stat(e.state.journalPath())
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(journalMagic) + 2*recordSize); fi.Size() != want {
		t.Errorf("journal is %d bytes after load, want %d", fi.Size(), want)
	}
}

func TestTornJournalTail(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c := newContent(t, 1000)
	e, err := s.Entry(c.d, 1000)
	if err != nil {
		t.Fatal(err)
	}
	write(t, e, c, 0, 100)
	jpath := e.state.journalPath()
	e.Close()
	s.Close()

	// A crash while appending the record of [100, 200) left half of it.
	rec := make([]byte, recordSize)
	encodeRecord(rec, span{100, 200})
	f, err := os.OpenFile(jpath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(rec[:recordSize/2])
	f.Close()

	s = openStore(t, dir)
	e = openEntry(t, s, c)
	if !e.Has(0, 100) {
		t.Error("records before the torn one lost")
	}
	if e.Has(100, 1) {
		t.Error("torn record trusted")
	}
	// Appending after the repaired tail must survive the next load.
	write(t, e, c, 500, 600)
	e.Close()
	s.Close()
	s = openStore(t, dir)
	e = openEntry(t, s, c)
	if !e.Has(500, 100) {
		t.Error("record appended after a torn tail lost")
	}
}

func TestSharedEntries(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := newContent(t, 100)
	a := openEntry(t, s, c)
	b, err := s.Entry(c.d, 100)
	if err != nil {
		t.Fatal(err)
	}
	write(t, a, c, 0, 100)
	if !b.Complete() {
		t.Fatal("write through one handle not seen by the other")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	readAll(t, b, c) // b's fd is still open
	if err := a.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: err = %v, want os.ErrClosed", err)
	}
	if _, err := a.ReadAt(make([]byte, 1), 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadAt on closed handle: err = %v, want os.ErrClosed", err)
	}
	if st := s.Stats(); st.Entries != 1 || st.Bytes != 100 {
		t.Errorf("Stats = %+v, want one entry of 100 bytes", st)
	}
}

func TestSizeMismatch(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := newContent(t, 100)
	openEntry(t, s, c)
	if _, err := s.Entry(c.d, 200); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Entry with another size: err = %v, want invalid argument", err)
	}
	if _, err := s.Entry(c.d, -1); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Entry with negative size: err = %v, want invalid argument", err)
	}
}

func TestInvalidDigests(t *testing.T) {
	s := openStore(t, t.TempDir())
	hex := digest.FromString("x").Encoded()
	for _, d := range []digest.Digest{
		"",
		"sha256:",
		"sha256:xyz",
		"sha256:../../../../etc/passwd",
		digest.Digest("sha256:" + hex[:63] + "/"),
		digest.Digest("sha256:" + hex + "/.."),
		digest.Digest("sha384:" + hex),
		digest.Digest("md5:" + hex[:32]),
		digest.Digest("SHA256:" + hex),
	} {
		if _, err := s.Entry(d, 1); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Entry(%q): err = %v, want invalid argument", d, err)
		}
		if err := s.Hold("layer", []digest.Digest{d}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Hold(%q): err = %v, want invalid argument", d, err)
		}
	}
	if _, err := s.Entry(digest.SHA512.FromString("x"), 1); err != nil {
		t.Errorf("sha512 digest refused: %v", err)
	}
}

// fill creates a complete, closed entry.
func fill(t *testing.T, s *Store, c content) {
	t.Helper()
	e, err := s.Entry(c.d, int64(len(c.data)))
	if err != nil {
		t.Fatal(err)
	}
	write(t, e, c, 0, len(c.data))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

func exists(t *testing.T, s *Store, c content) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(s.dir, "files", "sha256", c.d.Encoded()))
	return err == nil
}

func TestEvictionLRU(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxBytes(300))
	a, b, c, d := newContent(t, 100), newContent(t, 100), newContent(t, 100), newContent(t, 100)
	fill(t, s, a)
	fill(t, s, b)
	fill(t, s, c)
	// Using a makes b the least recently used.
	e, err := s.Entry(a.d, 100)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	fill(t, s, d)
	if exists(t, s, b) || !exists(t, s, a) || !exists(t, s, c) || !exists(t, s, d) {
		t.Error("eviction did not remove exactly the least recently used entry")
	}
	if st := s.Stats(); st.Evictions != 1 || st.Bytes != 300 || st.Entries != 3 {
		t.Errorf("Stats = %+v, want 1 eviction, 300 bytes, 3 entries", st)
	}
}

func TestEvictionSparesOpenEntries(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxBytes(150))
	a, b := newContent(t, 100), newContent(t, 100)
	ea := openEntry(t, s, a)
	write(t, ea, a, 0, 100)
	eb := openEntry(t, s, b)
	write(t, eb, b, 0, 100) // over the bound, nothing evictable: accepted
	if st := s.Stats(); st.Bytes != 200 || st.Evictions != 0 {
		t.Errorf("Stats = %+v, want 200 bytes and no eviction while all open", st)
	}
	readAll(t, ea, a)
	readAll(t, eb, b)
	// Closing a makes it evictable, and the store returns within bound.
	if err := ea.Close(); err != nil {
		t.Fatal(err)
	}
	if exists(t, s, a) || !exists(t, s, b) {
		t.Error("closing a did not evict it in favour of the open b")
	}
	if st := s.Stats(); st.Bytes != 100 || st.Evictions != 1 {
		t.Errorf("Stats = %+v, want 100 bytes and 1 eviction", st)
	}
}

func TestEvictionPrefersUnheld(t *testing.T) {
	s := openStore(t, t.TempDir(), WithMaxBytes(200))
	held1, unheld, held2, next := newContent(t, 100), newContent(t, 100), newContent(t, 100), newContent(t, 100)
	if err := s.Hold("layer", []digest.Digest{held1.d, held2.d, next.d}); err != nil {
		t.Fatal(err)
	}
	fill(t, s, held1) // least recently used, but held
	fill(t, s, unheld)
	// Over the bound: the unheld entry goes before the older held one.
	fill(t, s, next)
	if exists(t, s, unheld) || !exists(t, s, held1) {
		t.Fatal("held entry evicted while an unheld one was available")
	}
	// Only held entries left to evict: the least recently used goes.
	fill(t, s, held2)
	if exists(t, s, held1) || !exists(t, s, held2) || !exists(t, s, next) {
		t.Error("bound not enforced on held entries in LRU order")
	}
}

func TestHoldDrop(t *testing.T) {
	s := openStore(t, t.TempDir())
	a, b, c, open := newContent(t, 10), newContent(t, 10), newContent(t, 10), newContent(t, 10)
	for _, x := range []content{a, b, c} {
		fill(t, s, x)
	}
	eo := openEntry(t, s, open)
	write(t, eo, open, 0, 10)
	if err := s.Hold("l1", []digest.Digest{a.d, b.d, open.d}); err != nil {
		t.Fatal(err)
	}
	if err := s.Hold("l2", []digest.Digest{b.d}); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop("l1"); err != nil {
		t.Fatal(err)
	}
	if exists(t, s, a) {
		t.Error("entry no one holds survived Drop")
	}
	if !exists(t, s, b) {
		t.Error("entry another owner holds deleted by Drop")
	}
	if !exists(t, s, open) {
		t.Error("open entry deleted by Drop")
	}
	if !exists(t, s, c) {
		t.Error("never-held entry deleted by Drop")
	}
	if err := s.Drop("l2"); err != nil {
		t.Fatal(err)
	}
	if exists(t, s, b) {
		t.Error("entry survived Drop of its last owner")
	}
	if st := s.Stats(); st.Entries != 2 || st.Bytes != 20 {
		t.Errorf("Stats = %+v, want 2 entries of 20 bytes", st)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "files", "sha256", a.d.Encoded()+".ranges")); err == nil {
		t.Error("journal of dropped entry left behind")
	}
}

func TestFile(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := newContent(t, 1000)
	e := openEntry(t, s, c)
	write(t, e, c, 0, 999)
	if _, err := e.File(); !errors.Is(err, ErrNotPresent) || !errdefs.IsFailedPrecondition(err) {
		t.Errorf("File of incomplete entry: err = %v, want ErrNotPresent", err)
	}
	write(t, e, c, 999, 1000)
	f, err := e.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, c.data) {
		t.Errorf("File contents differ (err %v)", err)
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Error("File is writable")
	}
}

func TestEmptyFileIsComplete(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := newContent(t, 0)
	e := openEntry(t, s, c)
	if !e.Complete() || !e.Has(0, 0) {
		t.Error("empty entry not complete")
	}
	if n, err := e.ReadAt(make([]byte, 1), 0); n != 0 || err != io.EOF {
		t.Errorf("ReadAt of empty entry = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir)
	if _, err := Open(dir); !errdefs.IsUnavailable(err) {
		t.Errorf("second Open of a store in use: err = %v, want unavailable", err)
	}
}

func TestMachineCrashDiscardsCache(t *testing.T) {
	for _, tt := range []struct {
		name   string
		marker string // run marker left behind; "" for a clean Close
		keep   bool
	}{
		{"clean close", "", true},
		{"daemon crash", string(bootID()), true},
		{"machine crash", "a-boot-before", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			c := newContent(t, 100)
			fill(t, s, c)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if tt.marker != "" {
				if err := os.WriteFile(filepath.Join(dir, markerName), []byte(tt.marker+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			s = openStore(t, dir)
			if got := exists(t, s, c); got != tt.keep {
				t.Errorf("entry kept = %v, want %v", got, tt.keep)
			}
		})
	}
}

func TestOpenRemovesStrays(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c, empty := newContent(t, 100), newContent(t, 100)
	fill(t, s, c)
	e, err := s.Entry(empty.d, 100) // created, never written
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	s.Close()
	algDir := filepath.Join(dir, "files", "sha256")
	strays := []string{"not-a-digest", c.d.Encoded() + ".ranges.tmp", newContent(t, 1).d.Encoded() + ".ranges"}
	for _, name := range strays {
		if err := os.WriteFile(filepath.Join(algDir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s = openStore(t, dir)
	for _, name := range append(strays, empty.d.Encoded()) {
		if _, err := os.Stat(filepath.Join(algDir, name)); err == nil {
			t.Errorf("%s left after Open", name)
		}
	}
	if st := s.Stats(); st.Entries != 1 || !exists(t, s, c) {
		t.Errorf("Stats = %+v, want the one real entry", st)
	}
}

func TestOpenEnforcesSmallerBound(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	fill(t, s, newContent(t, 100))
	fill(t, s, newContent(t, 100))
	s.Close()
	s = openStore(t, dir, WithMaxBytes(150))
	if st := s.Stats(); st.Bytes != 100 || st.Evictions != 1 {
		t.Errorf("Stats = %+v, want 100 bytes after 1 eviction", st)
	}
}

func TestHandlesAfterStoreClose(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := newContent(t, 100)
	e := openEntry(t, s, c)
	write(t, e, c, 0, 50)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ReadAt(make([]byte, 10), 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadAt after store Close: err = %v, want os.ErrClosed", err)
	}
	if err := e.WriteAt(c.data[50:], 50); !errors.Is(err, os.ErrClosed) {
		t.Errorf("WriteAt after store Close: err = %v, want os.ErrClosed", err)
	}
	if _, err := s.Entry(c.d, 100); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Entry after store Close: err = %v, want failed precondition", err)
	}
}

// TestJournalCreatedByFirstWrite: a fresh entry has no journal file until
// its first write (a file creation saved per entry, most of the cost of a
// small file); a leftover journal of a forgotten entry cannot claim bytes
// of the new one; an entry reopened before any write still works.
func TestJournalCreatedByFirstWrite(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c := newContent(t, 4096)
	st := newEntryState(dir, c.d, 4096)
	if err := os.MkdirAll(filepath.Dir(st.journalPath()), 0o700); err != nil {
		t.Fatal(err)
	}
	leftover := make([]byte, len(journalMagic)+recordSize)
	copy(leftover, journalMagic)
	encodeRecord(leftover[len(journalMagic):], span{0, 4096})
	if err := os.WriteFile(st.journalPath(), leftover, 0o600); err != nil {
		t.Fatal(err)
	}

	e, err := s.Entry(c.d, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.journalPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("fresh entry: journal stat %v, want no journal (the leftover removed)", err)
	}
	if e.Has(0, 1) {
		t.Error("fresh entry claims bytes")
	}
	e.Close()
	e = openEntry(t, s, c) // reopened with nothing written
	write(t, e, c, 0, 1024)
	write(t, e, c, 1024, 4096)
	if fi, err := os.Stat(st.journalPath()); err != nil || fi.Size() != int64(len(journalMagic)+recordSize) {
		t.Errorf("after two writes completing the file: journal %v, %v; want one record", fi, err)
	}
	e.Close()
	s.Close()

	s = openStore(t, dir)
	e = openEntry(t, s, c)
	readAll(t, e, c)
}
