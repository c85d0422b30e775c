package cache

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestConcurrentUse hammers shared entries from many goroutines, with a bound
// small enough that entries are evicted and recreated meanwhile. Run it with
// -race. Whatever interleaving happens, present bytes must be the written ones.
func TestConcurrentUse(t *testing.T) {
	const (
		workers = 8
		chunk   = 4 << 10
		size    = 64 * chunk
	)
	s := openStore(t, t.TempDir(), WithMaxBytes(2*size))
	contents := make([]content, 4)
	for i := range contents {
		contents[i] = newContent(t, size)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 0))
			if err := s.Hold("layer", []digest.Digest{contents[w%len(contents)].d}); err != nil {
				errs <- err
				return
			}
			for range 3 {
				for _, i := range rnd.Perm(len(contents)) {
					if err := useEntry(s, contents[i], chunk, rnd); err != nil {
						errs <- err
						return
					}
				}
			}
			if w%2 == 0 {
				_ = s.Drop("layer") // shared owner: drops everyone's holds at once
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := s.Stats(); st.Bytes > 2*size || st.Bytes < 0 {
		t.Errorf("after all closed Stats.Bytes = %d, want within [0, %d]", st.Bytes, 2*size)
	}
}

// useEntry writes the chunks of c in random order, reading back whatever is
// present as it goes.
func useEntry(s *Store, c content, chunk int, rnd *rand.Rand) error {
	e, err := s.Entry(c.d, int64(len(c.data)))
	if err != nil {
		return err
	}
	defer e.Close()
	p := make([]byte, chunk)
	for _, k := range rnd.Perm(len(c.data) / chunk) {
		off := k * chunk
		if !e.Has(int64(off), int64(chunk)) {
			if err := e.WriteAt(c.data[off:off+chunk], int64(off)); err != nil {
				return err
			}
		}
		r := rnd.IntN(len(c.data) - chunk)
		if e.Has(int64(r), int64(chunk)) {
			if _, err := e.ReadAt(p, int64(r)); err != nil {
				return err
			}
			if !bytes.Equal(p, c.data[r:r+chunk]) {
				return fmt.Errorf("entry %s: bytes at %d differ from the written ones", c.d, r)
			}
		}
	}
	if !e.Complete() {
		return fmt.Errorf("entry %s not complete after writing every chunk", c.d)
	}
	return nil
}
