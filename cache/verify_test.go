package cache

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
)

// reopen closes the entry and the store and opens both again over dir, as a
// restarted daemon does.
func reopen(t *testing.T, dir string, s *Store, e *Entry, c content) (*Store, *Entry) {
	t.Helper()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	return s, openEntry(t, s, c)
}

func TestVerifiedResetOnReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c := newContent(t, 1000)
	e, err := s.Entry(c.d, 1000)
	if err != nil {
		t.Fatal(err)
	}
	write(t, e, c, 0, 1000)
	if !e.Verified(0, 1000) {
		t.Fatal("bytes this process wrote are not verified")
	}
	s, e = reopen(t, dir, s, e, c)
	if !e.Has(0, 1000) || !e.Complete() {
		t.Fatal("presence not restored")
	}
	if e.Verified(0, 1) || e.Verified(999, 1) {
		t.Error("bytes loaded from an earlier run count as verified")
	}
	if _, err := e.File(); !errdefs.IsFailedPrecondition(err) || errors.Is(err, ErrNotPresent) {
		t.Errorf("File of a complete, unverified entry: err = %v, want a failed precondition", err)
	}

	if !e.MarkVerified(0, 400) {
		t.Fatal("MarkVerified of present bytes failed")
	}
	if !e.Verified(100, 300) || e.Verified(300, 200) {
		t.Error("Verified does not follow MarkVerified")
	}
	write(t, e, c, 400, 1000) // rewriting present bytes verifies them
	if !e.Verified(0, 1000) {
		t.Error("WriteAt over present bytes did not verify them")
	}
	f, err := e.File()
	if err != nil {
		t.Fatalf("File of a complete, verified entry: %v", err)
	}
	f.Close()
	// Closing and reopening the entry (not the store) keeps what was
	// verified: the state is shared for as long as the store runs.
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if e = openEntry(t, s, c); !e.Verified(0, 1000) {
		t.Error("verification forgotten when the entry was reopened")
	}
}

func TestMarkVerifiedNeedsPresence(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := newContent(t, 1000)
	e := openEntry(t, s, c)
	write(t, e, c, 0, 500)
	if e.MarkVerified(400, 200) {
		t.Error("MarkVerified of partly missing bytes succeeded")
	}
	if e.Verified(500, 1) {
		t.Error("missing bytes count as verified")
	}
}

func TestDiscardPersists(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c := newContent(t, 4000)
	e, err := s.Entry(c.d, 4000)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < 4000; off += 1000 {
		write(t, e, c, off, off+1000)
	}
	s, e = reopen(t, dir, s, e, c)
	e.MarkVerified(0, 1000)

	// [500, 2500): the verified half of the first chunk stays.
	n, err := e.Discard(500, 2000)
	if err != nil || n != 1500 {
		t.Fatalf("Discard = %d, %v; want 1500 bytes dropped", n, err)
	}
	if e.Has(1000, 1) || e.Has(2499, 1) || !e.Has(0, 1000) || !e.Has(2500, 1500) || e.Complete() {
		t.Error("presence after Discard is wrong")
	}
	if _, err := e.ReadAt(make([]byte, 10), 1500); !errors.Is(err, ErrNotPresent) {
		t.Errorf("ReadAt of discarded bytes: err = %v, want ErrNotPresent", err)
	}
	if got := s.Stats().Bytes; got != 2500 {
		t.Errorf("Stats.Bytes = %d after Discard, want 2500", got)
	}
	if n, err := e.Discard(1000, 1500); err != nil || n != 0 {
		t.Errorf("second Discard = %d, %v; want 0 bytes", n, err)
	}

	// A restart finds the journal no longer claiming the range, and the
	// journal still takes appends.
	s, e = reopen(t, dir, s, e, c)
	if e.Has(1000, 1) || e.Has(2000, 500) || !e.Has(0, 1000) || !e.Has(2500, 1500) {
		t.Error("Discard did not persist")
	}
	if got := s.Stats().Bytes; got != 2500 {
		t.Errorf("Stats.Bytes = %d after reopen, want 2500", got)
	}
	write(t, e, c, 1000, 2500)
	s, e = reopen(t, dir, s, e, c)
	if !e.Complete() {
		t.Fatal("bytes written after a Discard did not persist")
	}
	readAll(t, e, c)
}

func TestDiscardKeepsVerified(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := newContent(t, 1000)
	e := openEntry(t, s, c)
	write(t, e, c, 0, 1000)
	if n, err := e.Discard(0, 1000); err != nil || n != 0 {
		t.Errorf("Discard of bytes this process wrote = %d, %v; want 0", n, err)
	}
	if !e.Complete() {
		t.Error("verified bytes were discarded")
	}
	if _, err := e.Discard(-1, 10); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Discard at a negative offset: err = %v, want invalid argument", err)
	}
	e.Close()
	if _, err := e.Discard(0, 10); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Discard on a closed entry: err = %v, want os.ErrClosed", err)
	}
}

func TestDiscardAfterStoreClose(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c := newContent(t, 1000)
	e, err := s.Entry(c.d, 1000)
	if err != nil {
		t.Fatal(err)
	}
	write(t, e, c, 0, 1000)
	s, e = reopen(t, dir, s, e, c)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Discard(0, 1000); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Discard after the store closed: err = %v, want os.ErrClosed", err)
	}
}

// TestConcurrentVerifyDiscard has readers check, drop and rewrite the
// chunks of an entry loaded from an earlier run all at once. Run it with
// -race. Verified bytes must stay readable: a reader that found them
// verified reads them next.
func TestConcurrentVerifyDiscard(t *testing.T) {
	const chunk, chunks = 4 << 10, 64
	dir := t.TempDir()
	s := openStore(t, dir)
	c := newContent(t, chunk*chunks)
	e, err := s.Entry(c.d, chunk*chunks)
	if err != nil {
		t.Fatal(err)
	}
	write(t, e, c, 0, chunk*chunks)
	s, _ = reopen(t, dir, s, e, c)

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			e, err := s.Entry(c.d, chunk*chunks)
			if err != nil {
				errs <- err
				return
			}
			defer e.Close()
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			for range 3 {
				for _, k := range rnd.Perm(chunks) {
					if err := useChunk(e, c, int64(k*chunk), chunk, rnd.IntN(2) == 0); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e = openEntry(t, s, c)
	for off := 0; off < chunk*chunks; off += chunk {
		if !e.Has(int64(off), chunk) { // dropped last
			write(t, e, c, off, off+chunk)
		}
	}
	if !e.Complete() || !e.Verified(0, chunk*chunks) || s.Stats().Bytes != chunk*chunks {
		t.Errorf("after the readers: complete %v, verified %v, %d bytes accounted",
			e.Complete(), e.Verified(0, chunk*chunks), s.Stats().Bytes)
	}
	readAll(t, e, c)
}

// useChunk reads the chunk at off if verified, else checks it (drop says
// whether it finds it bad) if present, else writes it.
func useChunk(e *Entry, c content, off, n int64, drop bool) error {
	switch {
	case e.Verified(off, n):
		p := make([]byte, n)
		if _, err := e.ReadAt(p, off); err != nil {
			return fmt.Errorf("verified chunk at %d: %w", off, err)
		}
		if !bytes.Equal(p, c.data[off:off+n]) {
			return fmt.Errorf("verified chunk at %d differs", off)
		}
	case e.Has(off, n) && drop:
		_, err := e.Discard(off, n)
		return err
	case e.Has(off, n):
		e.MarkVerified(off, n)
	default:
		return e.WriteAt(c.data[off:off+n], off)
	}
	return nil
}
