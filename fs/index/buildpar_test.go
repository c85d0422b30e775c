package index

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/lazysnap/lazysnap/fs/index/indextest"
)

// withMinParallelEntries lets tests build small TOCs on several workers.
func withMinParallelEntries(n int) Option { return func(o *options) { o.minParallelEntries = n } }

// sameOnEveryWorkerCount checks that Build on several workers, down to TOCs
// of one entry, gives what it gives on one: the same index, or the same
// error.
func sameOnEveryWorkerCount(t *testing.T, toc *estargz.JTOC, payloadEnd int64) {
	t.Helper()
	want, wantErr := Build(context.Background(), toc, payloadEnd, WithDecodeWorkers(1))
	for _, workers := range []int{2, 3, 8} {
		got, err := Build(context.Background(), toc, payloadEnd, WithDecodeWorkers(workers), withMinParallelEntries(1))
		if fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Fatalf("%d workers: error %v, one worker's %v", workers, err, wantErr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%d workers: the index differs from one worker's", workers)
		}
	}
}

// TestBuildParallelRealTOCs: TOCs shaped like real layers' build to the same
// index on any number of workers.
func TestBuildParallelRealTOCs(t *testing.T) {
	for i, n := range []int{1, 100, 3000, 10_000, benchTOCEntries} {
		toc := indextest.RealTOC(n, uint64(i))
		if _, err := Build(context.Background(), toc, 1<<40); err != nil {
			t.Fatalf("%d entries: %v", n, err)
		}
		sameOnEveryWorkerCount(t, toc, 1<<40)
	}
	sameOnEveryWorkerCount(t, bigTOC(5000), 1<<40)
	sameOnEveryWorkerCount(t, &estargz.JTOC{}, 1<<40)
}

// TestBuildParallelRefusesAsSequential: hostile TOCs are refused with the
// same error on any number of workers.
func TestBuildParallelRefusesAsSequential(t *testing.T) {
	for name, s := range refused {
		t.Run(name, func(t *testing.T) { sameOnEveryWorkerCount(t, parse(t, s), 1<<20) })
	}
	for i, s := range splitPoints {
		var toc estargz.JTOC
		if json.Unmarshal([]byte(s), &toc) == nil {
			t.Run(fmt.Sprint("split", i), func(t *testing.T) { sameOnEveryWorkerCount(t, &toc, 1<<20) })
		}
	}
	sameOnEveryWorkerCount(t, indextest.RealTOC(3000, 1), -1)
	sameOnEveryWorkerCount(t, indextest.RealTOC(3000, 1), 1000)
}

// TestBuildParallelManyFaults: a TOC shaped like a real layer's with a few
// faults of every kind Build refuses, where each, in any phase of Build,
// could be the one reported, is refused for the same one on any number of
// workers.
func TestBuildParallelManyFaults(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	base := indextest.RealTOC(2500, 7)
	n := 100
	if testing.Short() {
		n = 20
	}
	refusedAs := map[string]int{}
	for range n {
		toc := cloneTOC(base)
		for range 1 + rnd.IntN(4) {
			addFault(rnd, toc)
		}
		_, err := Build(context.Background(), toc, 1<<40, WithDecodeWorkers(1))
		if err != nil {
			refusedAs[strings.Fields(err.Error())[2]]++
		}
		sameOnEveryWorkerCount(t, toc, 1<<40)
	}
	t.Logf("errors by first word: %v", refusedAs)
}

func cloneTOC(toc *estargz.JTOC) *estargz.JTOC {
	c := &estargz.JTOC{Version: toc.Version, Entries: make([]*estargz.TOCEntry, len(toc.Entries))}
	for i, e := range toc.Entries {
		e2 := *e
		c.Entries[i] = &e2
	}
	return c
}

// addFault spoils a random entry of toc in one of the ways Build refuses.
func addFault(rnd *rand.Rand, toc *estargz.JTOC) {
	e := toc.Entries[rnd.IntN(len(toc.Entries))]
	switch rnd.IntN(15) {
	case 0:
		e.Name = "../x" + e.Name
	case 1:
		e.Name += "\x00"
	case 2:
		e.Type = "socket"
	case 3:
		e.UID = -1
	case 4:
		e.Size = -1
	case 5:
		e.Digest = "md5:d41d8cd98f00b204e9800998ecf8427e"
	case 6:
		e.ChunkDigest = "sha256:bad"
	case 7:
		e.ChunkOffset++
	case 8:
		e.Offset = 1 << 41
	case 9:
		e.Xattrs = map[string][]byte{"": nil}
	case 10:
		e.DevMinor = -1
	case 11:
		e.Name = "a/.wh.."
	case 12:
		e.Type, e.LinkName = "hardlink", "nope"
	case 13:
		e.Type, e.LinkName = "hardlink", e.Name
	case 14:
		e.Name = toc.Entries[rnd.IntN(len(toc.Entries))].Name + "/x"
	}
}

// TestBuildRefusesFirstFault: with several hardlink or parent faults, the
// one reported is the first in TOC order, every time; with several bad
// xattr names, the first in name order.
func TestBuildRefusesFirstFault(t *testing.T) {
	for _, tc := range []struct{ toc, want string }{
		{`{"entries":[{"name":"f","type":"reg"},{"name":"a","type":"hardlink","linkName":"x"},{"name":"b","type":"hardlink","linkName":"y"},` +
			`{"name":"c","type":"hardlink","linkName":"z"}]}`, `hardlink "a" points to missing "x"`},
		{`{"entries":[{"name":"f","type":"reg"},{"name":"g","type":"reg"},{"name":"f/a/b","type":"reg"},{"name":"g/c","type":"reg"},` +
			`{"name":"f/d","type":"reg"}]}`, `parent of "f/a/b" is a reg`},
		{`{"entries":[{"name":"d","type":"dir","xattrs":{"user.\u0000":"","a\u0000":"","user.a":"","\u0000":""}}]}`,
			`bad xattr name "\x00"`},
	} {
		for range 20 {
			_, err := Build(context.Background(), parse(t, tc.toc), 1<<20)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build: %v, want %s", err, tc.want)
			}
		}
	}
}

// TestBuildParallelCancelled: a cancelled Build stops with the context's
// error on any number of workers.
func TestBuildParallelCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, workers := range []int{1, 2, 3} {
		if _, err := Build(ctx, bigTOC(20_000), 1<<40, WithDecodeWorkers(workers)); !errors.Is(err, context.Canceled) {
			t.Errorf("%d workers: %v, want context.Canceled", workers, err)
		}
	}
}

// FuzzBuild: on any TOC, Build on several workers gives exactly what it
// gives on one.
func FuzzBuild(f *testing.F) {
	addSeedTOCs(f)
	f.Add([]byte(`{"entries":[{"name":"a/b/c","type":"reg","size":10,"offset":10,"chunkSize":4,"digest":"` + dA +
		`","chunkDigest":"` + dA + `"},{"type":"chunk","offset":20,"chunkOffset":4,"chunkDigest":"` + dB + `"},` +
		`{"name":"a/l","type":"hardlink","linkName":"a/b/c"},{"name":"a/.wh..wh..opq","type":"reg"},` +
		`{"name":"a/b/c","type":"symlink","linkName":"x"},{"name":"a/l2","type":"hardlink","linkName":"a/l"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		toc, err := Decode(context.Background(), strings.NewReader(string(data)), WithMaxEntries(1000))
		if err != nil {
			return
		}
		const payloadEnd = 1 << 20
		want, wantErr := Build(context.Background(), toc, payloadEnd, WithDecodeWorkers(1))
		got, err := Build(context.Background(), toc, payloadEnd, WithDecodeWorkers(3), withMinParallelEntries(1))
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("3 workers: %v; one worker: %v (or the indexes differ)", err, wantErr)
		}
	})
}

// BenchmarkParallelBuild measures Build by TOC size on one worker and on
// GOMAXPROCS (at most 4), to find where building on more than one core
// starts to pay.
func BenchmarkParallelBuild(b *testing.B) {
	for _, n := range []int{300, 1000, 2000, 4000, 10_000, benchTOCEntries} {
		toc := indextest.RealTOC(n, 1)
		for _, mode := range []struct {
			name string
			opts []Option
		}{{"sequential", []Option{WithDecodeWorkers(1)}}, {"parallel", []Option{withMinParallelEntries(1)}}} {
			b.Run(fmt.Sprintf("%d/%s", n, mode.name), func(b *testing.B) {
				for b.Loop() {
					if _, err := Build(context.Background(), toc, 1<<40, mode.opts...); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
