// Package indextest generates TOCs for tests and benchmarks of the index and
// of what reads TOCs.
package indextest

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// RealTOC is a TOC shaped like the big layer of a Python data-science image
// (scipy's: 38,673 entries, 2 MB of gzip), generated deterministically from
// seed: a landmark first, then directories before their contents in tar
// order, packages a few levels deep holding mostly small files, some large
// shared objects in 4 MiB chunks, symlinks, a few hardlinks and xattrs. It
// has about n entries, chunk entries included. Every field is what estargz
// writes: its JSON is what decoding a real TOC sees.
func RealTOC(n int, seed uint64) *estargz.JTOC {
	g := &tocGen{rnd: rand.New(rand.NewPCG(seed, 0x70c)), off: 512, n: n, words: strings.Fields(words)}
	g.add(&estargz.TOCEntry{Name: estargz.NoPrefetchLandmark, Type: "reg", Size: 1, Offset: 0,
		Digest: g.digest()})
	g.dir("usr/")
	g.dir("usr/lib/")
	g.dir("usr/lib/python3.12/")
	g.dir("usr/lib/python3.12/site-packages/")
	for p := 0; len(g.toc.Entries) < n; p++ {
		g.tree(fmt.Sprintf("usr/lib/python3.12/site-packages/%s%d/", g.word(), p), 0)
	}
	return &g.toc
}

type tocGen struct {
	rnd   *rand.Rand
	toc   estargz.JTOC
	off   int64
	n     int
	files []string // regular files so far, for hardlinks
	words []string
}

// words make up the generated names.
const words = `core linalg sparse signal optimize stats special integrate interpolate io
	ndimage spatial cluster fft _lib tests data utils base common compat testing _build __pycache__
	csgraph distance morphology decomp lapack blas arpack propack _highs _shgo tools misc fftpack odr`

func (g *tocGen) word() string { return g.words[g.rnd.IntN(len(g.words))] }

func (g *tocGen) digest() string {
	return fmt.Sprintf("sha256:%016x%016x%016x%016x", g.rnd.Uint64(), g.rnd.Uint64(), g.rnd.Uint64(), g.rnd.Uint64())
}

func (g *tocGen) add(e *estargz.TOCEntry) {
	if e.ModTime3339 == "" && e.Type != "chunk" {
		e.ModTime3339 = fmt.Sprintf("2024-%02d-%02dT%02d:%02d:%02dZ", 1+g.rnd.IntN(12), 1+g.rnd.IntN(28),
			g.rnd.IntN(24), g.rnd.IntN(60), g.rnd.IntN(60))
	}
	g.toc.Entries = append(g.toc.Entries, e)
}

func (g *tocGen) dir(name string) {
	g.add(&estargz.TOCEntry{Name: name, Type: "dir", Mode: 0o755})
}

// tree adds directory dir and its contents: a few dozen files and, less
// deep, subdirectories.
func (g *tocGen) tree(dir string, depth int) {
	g.dir(dir)
	for range 3 + g.rnd.IntN(30) {
		if len(g.toc.Entries) >= g.n {
			return
		}
		g.file(dir)
	}
	if depth < 6 {
		for i := range g.rnd.IntN(5 - depth/2) {
			g.tree(fmt.Sprintf("%s%s_%d/", dir, g.word(), i), depth+1)
		}
	}
}

func (g *tocGen) file(dir string) {
	name := dir + g.fileName()
	switch r := g.rnd.IntN(1000); {
	case r < 30:
		g.add(&estargz.TOCEntry{Name: name, Type: "symlink", LinkName: g.fileName(), Mode: 0o777})
		return
	case r < 35 && len(g.files) > 0:
		g.add(&estargz.TOCEntry{Name: name, Type: "hardlink", LinkName: g.files[g.rnd.IntN(len(g.files))], Mode: 0o644})
		return
	case r < 40:
		g.add(&estargz.TOCEntry{Name: name, Type: "reg", Mode: 0o644})
		return
	}
	size := int64(100 + g.rnd.ExpFloat64()*8000)
	if g.rnd.IntN(100) == 0 {
		size = 1<<20 + g.rnd.Int64N(40<<20) // a shared object of some MiB
	}
	e := &estargz.TOCEntry{Name: name, Type: "reg", Size: size, Mode: 0o644, Offset: g.off, Digest: g.digest()}
	if g.rnd.IntN(500) == 0 {
		e.Xattrs = map[string][]byte{"user.mime_type": []byte("text/x-python"), "security.selinux": []byte("system_u:object_r:usr_t:s0\x00")}
	}
	const chunk = 4 << 20
	// estargz gives a file of one chunk its own digest as chunk digest.
	e.ChunkDigest = e.Digest
	if size > chunk {
		e.ChunkSize, e.ChunkDigest = chunk, g.digest()
	}
	g.add(e)
	g.off += 64 + size/3
	for c := int64(chunk); c < size; c += chunk {
		g.add(&estargz.TOCEntry{Name: name, Type: "chunk", Offset: g.off, ChunkOffset: c,
			ChunkSize: min(chunk, size-c), ChunkDigest: g.digest()})
		g.off += chunk / 3
	}
	g.files = append(g.files, name)
}

func (g *tocGen) fileName() string {
	switch g.rnd.IntN(6) {
	case 0:
		return fmt.Sprintf("_%s%d.cpython-312-x86_64-linux-gnu.so", g.word(), g.rnd.IntN(100))
	case 1:
		return fmt.Sprintf("test_%s_%s.py", g.word(), g.word())
	case 2:
		return fmt.Sprintf("%s.cpython-312.pyc", g.word())
	default:
		return fmt.Sprintf("%s_%d.py", g.word(), g.rnd.IntN(1000))
	}
}
