package index

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/lazysnap/lazysnap/fs/index/indextest"
)

const (
	dA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// hostile TOCs the index must refuse.
var refused = map[string]string{
	"dotdot":          `{"entries":[{"name":"../etc/passwd","type":"reg"}]}`,
	"inner dotdot":    `{"entries":[{"name":"a/../../x","type":"dir"}]}`,
	"hardlink cycle":  `{"entries":[{"name":"a","type":"hardlink","linkName":"b"},{"name":"b","type":"hardlink","linkName":"a"}]}`,
	"self hardlink":   `{"entries":[{"name":"a","type":"hardlink","linkName":"a"}]}`,
	"dangling link":   `{"entries":[{"name":"a","type":"hardlink","linkName":"nope"}]}`,
	"link to dir":     `{"entries":[{"name":"d","type":"dir"},{"name":"a","type":"hardlink","linkName":"d"}]}`,
	"escaping link":   `{"entries":[{"name":"a","type":"hardlink","linkName":"../../x"}]}`,
	"negative size":   `{"entries":[{"name":"a","type":"reg","size":-5,"digest":"` + dA + `"}]}`,
	"no digest":       `{"entries":[{"name":"a","type":"reg","size":5,"offset":10}]}`,
	"offset past end": `{"entries":[{"name":"a","type":"reg","size":5,"offset":99999999,"digest":"` + dA + `"}]}`,
	"absurd size":     `{"entries":[{"name":"a","type":"reg","size":9223372036854775807,"offset":10,"digest":"` + dA + `"}]}`,
	"chunk gap": `{"entries":[{"name":"a","type":"reg","size":10,"offset":10,"chunkSize":4,"digest":"` + dA + `","chunkDigest":"` + dA + `"},` +
		`{"type":"chunk","offset":20,"chunkOffset":6,"chunkSize":4,"chunkDigest":"` + dB + `"}]}`,
	"chunk overflow": `{"entries":[{"name":"a","type":"reg","size":10,"offset":10,"chunkSize":40,"digest":"` + dA + `","chunkDigest":"` + dA + `"}]}`,
	"orphan chunk":   `{"entries":[{"type":"chunk","offset":20,"chunkOffset":6,"chunkSize":4}]}`,
	"parent is file": `{"entries":[{"name":"f","type":"reg"},{"name":"f/x","type":"reg"}]}`,
	"root is file":   `{"entries":[{"name":"./","type":"reg"}]}`,
	"bad type":       `{"entries":[{"name":"x","type":"socket"}]}`,
	"nul name":       `{"entries":[{"name":"a\u0000b","type":"reg"}]}`,
	"md5 digest":     `{"entries":[{"name":"a","type":"reg","size":5,"offset":10,"digest":"md5:d41d8cd98f00b204e9800998ecf8427e"}]}`,
	"bad uid":        `{"entries":[{"name":"a","type":"dir","uid":-1}]}`,
	"whiteout dots":  `{"entries":[{"name":"a/.wh..","type":"reg"}]}`,
}

func parse(t testing.TB, s string) *estargz.JTOC {
	t.Helper()
	var toc estargz.JTOC
	if err := json.Unmarshal([]byte(s), &toc); err != nil {
		t.Fatal(err)
	}
	return &toc
}

func TestBuildRefusesHostileTOCs(t *testing.T) {
	for name, s := range refused {
		t.Run(name, func(t *testing.T) {
			_, err := Build(context.Background(), parse(t, s), 1<<20)
			if err == nil {
				t.Fatal("Build accepted a hostile TOC")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Build: %v, want an invalid argument", err)
			}
		})
	}
}

func TestBuildNormalizes(t *testing.T) {
	toc := `{"entries":[
		{"name":"/abs/file","type":"reg"},
		{"name":"./dot/","type":"dir","mode":448},
		{"name":"dup","type":"reg","mode":420},
		{"name":"dup","type":"symlink","linkName":"target"},
		{"name":"dot/.wh.gone","type":"reg"},
		{"name":"dot/.wh..wh..opq","type":"reg"},
		{"name":"h1","type":"hardlink","linkName":"/abs/file"},
		{"name":"h2","type":"hardlink","linkName":"h1"},
		{"name":".prefetch.landmark","type":"reg","size":1,"offset":77,"digest":"` + dA + `"}
	]}`
	x, err := Build(context.Background(), parse(t, toc), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(p string) ID {
		id := Root
		for _, c := range strings.Split(p, "/") {
			next, ok := x.Lookup(id, c)
			if !ok {
				t.Fatalf("%s not found", p)
			}
			id = next
		}
		return id
	}
	file := lookup("abs/file")
	if lookup("h1") != file || lookup("h2") != file || x.Attr(file).Nlink != 3 {
		t.Errorf("hardlinks: h1 %d h2 %d file %d nlink %d", lookup("h1"), lookup("h2"), file, x.Attr(file).Nlink)
	}
	if got, _ := x.Readlink(lookup("dup")); got != "target" {
		t.Errorf("dup is %q, want the last entry (symlink to target)", got)
	}
	if a := x.Attr(lookup("dot/gone")); a.Mode != syscall.S_IFCHR || a.DevMajor != 0 || a.DevMinor != 0 {
		t.Errorf("whiteout: %+v", a)
	}
	if v, ok := x.Xattr(lookup("dot"), "trusted.overlay.opaque"); !ok || string(v) != "y" {
		t.Errorf("opaque dir: %q %v", v, ok)
	}
	if x.Mode(lookup("dot")) != syscall.S_IFDIR|0o700 {
		t.Errorf("dot mode %o", x.Mode(lookup("dot")))
	}
	for _, hidden := range []string{".prefetch.landmark", "dot/.wh.gone", "dot/.wh..wh..opq"} {
		if _, ok := x.Lookup(Root, hidden); ok {
			t.Errorf("%s is visible", hidden)
		}
	}
	if x.PrefetchEnd() != 77 {
		t.Errorf("prefetch end %d, want 77", x.PrefetchEnd())
	}
}

// FuzzIndex feeds hostile TOCs to Build: it must never panic, and a tree it
// accepts has clean names, no cycles, and chunks inside their file and blob.
func FuzzIndex(f *testing.F) {
	for _, s := range refused {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"entries":[{"name":"a/b/c","type":"reg","size":10,"offset":10,"chunkSize":4,"digest":"` + dA +
		`","chunkDigest":"` + dA + `"},{"type":"chunk","offset":20,"chunkOffset":4,"chunkDigest":"` + dB + `"},` +
		`{"name":"a/l","type":"hardlink","linkName":"a/b/c"},{"name":"a/.wh..wh..opq","type":"reg"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		toc, err := Decode(context.Background(), bytes.NewReader(data), WithMaxEntries(1000))
		if err != nil {
			return
		}
		const payloadEnd = 1 << 20
		x, err := Build(context.Background(), toc, payloadEnd, WithMaxEntries(1000))
		if err != nil {
			return
		}
		checkTree(t, x, payloadEnd)
	})
}

func checkTree(t *testing.T, x *Index, payloadEnd int64) {
	seenDirs := map[ID]bool{}
	var walk func(dir ID, depth int)
	walk = func(dir ID, depth int) {
		if seenDirs[dir] {
			t.Fatalf("directory %d reached twice", dir)
		}
		seenDirs[dir] = true
		prev := ""
		for name, id := range x.Children(dir) {
			if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
				t.Fatalf("bad name %q", name)
			}
			if name <= prev {
				t.Fatalf("names out of order: %q after %q", name, prev)
			}
			prev = name
			if got, ok := x.Lookup(dir, name); !ok || got != id {
				t.Fatalf("Lookup(%q) = %d %v, want %d", name, got, ok, id)
			}
			if !x.Valid(id) {
				t.Fatalf("invalid id %d", id)
			}
			if x.IsDir(id) {
				walk(id, depth+1)
			}
			checkChunks(t, x, id, payloadEnd)
		}
	}
	walk(Root, 0)
	checkDigests(t, x)
}

// checkDigests checks that DigestIndex points into Digests() at the
// digest Digest returns, for every inode.
func checkDigests(t *testing.T, x *Index) {
	ds := x.ContentKeys()
	for id := ID(0); x.Valid(id); id++ {
		i, want := x.ContentKeyIndex(id), x.ContentKey(id)
		if (i < 0) != (want == "") || i >= len(ds) || i >= 0 && ds[i] != want {
			t.Fatalf("inode %d: DigestIndex %d of %d digests, Digest %q", id, i, len(ds), want)
		}
	}
}

func checkChunks(t *testing.T, x *Index, id ID, payloadEnd int64) {
	var off int64
	for _, c := range x.Chunks(id) {
		if c.FileOffset != off || c.Size <= 0 || c.BlobOffset < 0 || c.BlobOffset >= c.BlobEnd || c.BlobEnd > payloadEnd {
			t.Fatalf("bad chunk %+v at %d", c, off)
		}
		off = c.End()
	}
	if off != x.Attr(id).Size && x.Mode(id)&syscall.S_IFMT == syscall.S_IFREG {
		t.Fatalf("chunks cover %d of %d bytes", off, x.Attr(id).Size)
	}
}

// bigTOC is a TOC of n regular files of one chunk each, 100 per directory,
// with names like a real image's.
func bigTOC(n int) *estargz.JTOC {
	toc := &estargz.JTOC{Version: 1}
	var off int64 = 100
	for i := 0; i < n; i++ {
		if i%100 == 0 {
			toc.Entries = append(toc.Entries, &estargz.TOCEntry{Name: fmt.Sprintf("usr/share/pkg%05d/", i/100), Type: "dir", Mode: 0o755})
		}
		d := fmt.Sprintf("sha256:%064x", i)
		toc.Entries = append(toc.Entries, &estargz.TOCEntry{
			Name: fmt.Sprintf("usr/share/pkg%05d/file-%07d.txt", i/100, i), Type: "reg", Mode: 0o644,
			Size: 1000, Offset: off, Digest: d, ChunkDigest: d, ModTime3339: "2024-01-01T00:00:00Z",
		})
		off += 600
	}
	return toc
}

// indexHeapBytes measures the heap an index of n entries keeps once the
// parsed TOC is gone.
func indexHeapBytes(t testing.TB, n int) (*Index, uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	x, err := Build(context.Background(), bigTOC(n), 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return x, after.HeapAlloc - before.HeapAlloc
}

// TestIndexMemory checks the memory target: at most 5 MB per 10k entries.
func TestIndexMemory(t *testing.T) {
	const n = 100_000
	x, bytes := indexHeapBytes(t, n)
	per10k := bytes * 10_000 / n
	t.Logf("index of %d entries: %d bytes on the heap, %d bytes per 10k entries (estimate %d)", x.Len(), bytes, per10k, x.SizeBytes())
	if per10k > 5<<20 {
		t.Errorf("%d bytes per 10k entries, want at most 5 MiB", per10k)
	}
	if _, ok := x.Lookup(Root, "usr"); !ok {
		t.Fatal("index lost its entries")
	}
}

// BenchmarkIndexMemory reports the heap an index keeps per 10k entries.
func BenchmarkIndexMemory(b *testing.B) {
	const n = 100_000
	var per10k uint64
	for b.Loop() {
		x, bytes := indexHeapBytes(b, n)
		per10k = bytes * 10_000 / n
		runtime.KeepAlive(x)
	}
	b.ReportMetric(float64(per10k), "B/10k-entries")
}

// BenchmarkLookup measures a lookup in a directory of 100 entries of a
// 100k-entry index.
func BenchmarkLookup(b *testing.B) {
	x, err := Build(context.Background(), bigTOC(100_000), 1<<40)
	if err != nil {
		b.Fatal(err)
	}
	usr, _ := x.Lookup(Root, "usr")
	share, _ := x.Lookup(usr, "share")
	for b.Loop() {
		pkg, ok := x.Lookup(share, "pkg00500")
		if !ok {
			b.Fatal("not found")
		}
		if _, ok := x.Lookup(pkg, "file-0050050.txt"); !ok {
			b.Fatal("not found")
		}
	}
}

// TestBlobNext walks the chunks in blob order although the names (and so
// the inode IDs and the chunk table) sort the other way round.
func TestBlobNext(t *testing.T) {
	toc := `{"entries":[` +
		`{"name":"z","type":"reg","size":8,"offset":10,"chunkSize":4,"digest":"` + dA + `","chunkDigest":"` + dA + `"},` +
		`{"type":"chunk","offset":20,"chunkOffset":4,"chunkSize":4,"chunkDigest":"` + dB + `"},` +
		`{"name":"m","type":"reg","size":3,"offset":30,"digest":"` + dB + `"},` +
		`{"name":"a","type":"reg","size":3,"offset":40,"digest":"` + dA + `"}]}`
	x, err := Build(context.Background(), parse(t, toc), 100)
	if err != nil {
		t.Fatal(err)
	}
	look := func(name string) ID {
		id, ok := x.Lookup(Root, name)
		if !ok {
			t.Fatalf("%s not found", name)
		}
		return id
	}
	z, m, a := look("z"), look("m"), look("a")
	type ref struct {
		id ID
		i  int
	}
	var got []ref
	for id, i, ok := z, 0, true; ok; id, i, ok = x.BlobNext(id, i) {
		got = append(got, ref{id, i})
	}
	want := []ref{{z, 0}, {z, 1}, {m, 0}, {a, 0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("blob order %v, want %v", got, want)
	}
}

// benchTOCEntries is the size of the TOC the benchmarks of Decode and Build
// use: about that of the big layer of the scipy image of `make bench`.
const benchTOCEntries = 40_000

// BenchmarkBuild measures building the index of a parsed TOC shaped like a
// real big layer's.
func BenchmarkBuild(b *testing.B) {
	toc := indextest.RealTOC(benchTOCEntries, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(context.Background(), toc, 1<<40); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeBuild measures decoding the JSON of a TOC shaped like a
// real big layer's and building its index, the work a mount does once the
// TOC is fetched and decompressed (with DecodeBytes, as a mount does).
func BenchmarkDecodeBuild(b *testing.B) {
	raw, err := json.Marshal(indextest.RealTOC(benchTOCEntries, 1))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		toc, err := DecodeBytes(context.Background(), raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Build(context.Background(), toc, 1<<40); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPathOf: the path of a file, of a directory, of the root, and one of
// the paths of a hardlinked file.
func TestPathOf(t *testing.T) {
	x := mustBuild(t, `{"version":1,"entries":[
		{"name":"usr/","type":"dir","mode":493},
		{"name":"usr/lib/","type":"dir","mode":493},
		{"name":"usr/lib/libx.so","type":"reg","mode":420},
		{"name":"hl","type":"hardlink","linkName":"usr/lib/libx.so"}
	]}`)
	for _, p := range []string{"usr/lib/libx.so", "usr/lib", "usr"} {
		if got, ok := x.PathOf(lookupPath(t, x, p)); !ok || got != "/"+p && got != "/hl" {
			t.Errorf("PathOf(%s) = %q, %v", p, got, ok)
		}
	}
	if got, ok := x.PathOf(Root); !ok || got != "/" {
		t.Errorf("PathOf(Root) = %q, %v; want /", got, ok)
	}
}
