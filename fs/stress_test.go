package fs_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestConcurrentReadsDuringBackgroundFetch reads every file of several
// layers from several goroutines, in random orders and more than once,
// while prefetch and background fetch run over a throttled link, with
// some files held open across the moment their cache entries complete
// (so opens mix the kernel's cached and passthrough modes). Some files are
// identical across layers, sharing cache entries and fetches. Every read
// must return exactly the file's bytes: no error, no short read.
func TestConcurrentReadsDuringBackgroundFetch(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 8<<20)
	f := newFS(t, lfs.WithPrefetch(true), lfs.WithBackgroundFetch(true))

	type mounted struct {
		mp string
		es []tentry
	}
	var layers []mounted
	for i := range 4 {
		es := []tentry{dir("app/", 0o755), dir("lib/", 0o755)}
		for j := range 60 {
			es = append(es, reg(fmt.Sprintf("app/f%03d", j), 8<<10, uint64(1000*i+j)))
		}
		for j := range 20 { // the same content in every layer
			es = append(es, text(fmt.Sprintf("lib/t%02d", j), fmt.Sprintf("shared text %d\n", j)))
		}
		es = append(es, reg("app/big", 3<<20+123, uint64(77+i)), reg("lib/shared.so", 1<<20+5, 999))
		l := buildLayer(t, es, estargz.WithChunkSize(256<<10))
		repo := fmt.Sprintf("stress/l%d:v1", i)
		push(t, registry.Host, repo, l)
		layers = append(layers, mounted{mount(t, f, proxy.Host+"/"+repo, l), es})
	}

	var held []*os.File
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	for _, m := range layers { // cached-mode handles, open while entries complete
		h, err := os.Open(filepath.Join(m.mp, "lib/shared.so"))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, h)
	}

	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for round := range 2 {
				for _, li := range rng.Perm(len(layers)) {
					m := layers[li]
					for _, ei := range rng.Perm(len(m.es)) {
						e := m.es[ei]
						if e.typ != '0' {
							continue
						}
						got, err := os.ReadFile(filepath.Join(m.mp, e.name))
						if err != nil {
							t.Errorf("round %d, %s of layer %d: %v", round, e.name, li, err)
							continue
						}
						if want := expected(t, e, 0, e.size); !bytes.Equal(got, want) {
							t.Errorf("round %d, %s of layer %d: %d bytes read, want %d, content equal %v",
								round, e.name, li, len(got), len(want), bytes.Equal(got, want))
						}
					}
				}
			}
		})
	}
	wg.Wait()
	for _, m := range layers {
		waitFor(t, "the background fetch", func() bool { return statusOf(t, f, m.mp).State == lfs.StateComplete })
		for _, e := range m.es {
			if e.typ == '0' {
				checkFile(t, m.mp, e) // complete: passthrough where allowed
			}
		}
	}
}
