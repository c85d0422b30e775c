package index

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
)

func buildJSON(t *testing.T, s string) (*Index, error) {
	t.Helper()
	toc, err := Decode(context.Background(), strings.NewReader(s))
	if err != nil {
		return nil, err
	}
	return Build(context.Background(), toc, 1<<20)
}

func mustBuild(t *testing.T, s string) *Index {
	t.Helper()
	x, err := buildJSON(t, s)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func lookupPath(t *testing.T, x *Index, p string) ID {
	t.Helper()
	id := Root
	for c := range strings.SplitSeq(p, "/") {
		next, ok := x.Lookup(id, c)
		if !ok {
			t.Fatalf("%s not found", p)
		}
		id = next
	}
	return id
}

// file is a TOC regular file entry claiming digest claimed, with chunks of
// the given digests, 4 bytes each at blob offsets from 10 on.
func file(name, claimed string, size int, chunks ...string) string {
	var sb strings.Builder
	for i, d := range chunks {
		if i == 0 {
			fmt.Fprintf(&sb, `{"name":%q,"type":"reg","size":%d,"offset":10,"chunkSize":4,"digest":%q,"chunkDigest":%q}`, name, size, claimed, d)
			continue
		}
		fmt.Fprintf(&sb, `,{"type":"chunk","offset":%d,"chunkOffset":%d,"chunkSize":4,"chunkDigest":%q}`, 10+10*i, 4*i, d)
	}
	return sb.String()
}

// TestContentKeys: files share a content key only when their verified
// layout is the same, whatever file digest their TOCs claim.
func TestContentKeys(t *testing.T) {
	key := func(entries string) string {
		x := mustBuild(t, `{"entries":[`+entries+`]}`)
		return string(x.ContentKey(lookupPath(t, x, "f")))
	}
	honest := key(file("f", dA, 8, dA, dB))
	for _, tc := range []struct {
		name    string
		entries string
		same    bool
	}{
		{"identical file in another TOC", `{"name":"other","type":"dir"},` + file("f", dA, 8, dA, dB), true},
		{"same claimed digest, other chunks (the attack)", file("f", dA, 8, dB, dA), false},
		{"other claimed digest, same chunks", file("f", dB, 8, dA, dB), true},
		{"same chunk digests, other chunk sizes",
			`{"name":"f","type":"reg","size":6,"offset":10,"chunkSize":2,"digest":"` + dA + `","chunkDigest":"` + dA + `"},` +
				`{"type":"chunk","offset":20,"chunkOffset":2,"chunkSize":4,"chunkDigest":"` + dB + `"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := key(tc.entries); (got == honest) != tc.same {
				t.Errorf("key %s, honest file's %s: want same %v", got, honest, tc.same)
			}
		})
	}
	if honest == dA || honest == dB {
		t.Errorf("content key %s is the claimed digest", honest)
	}
	// Only the size differs: one chunk of 4 bytes vs. 5 with the same digest.
	a := key(`{"name":"f","type":"reg","size":4,"offset":10,"digest":"` + dA + `"}`)
	b := key(`{"name":"f","type":"reg","size":5,"offset":10,"digest":"` + dA + `"}`)
	if a == b {
		t.Errorf("files of 4 and 5 bytes with the same chunk digest share key %s", a)
	}
}

// TestTrustedXattrsDropped: overlayfs reads its own state from trusted.*
// xattrs of lower layers, so a TOC's are not exposed; the opaque marker the
// index derives from ".wh..wh..opq" is.
func TestTrustedXattrsDropped(t *testing.T) {
	x := mustBuild(t, `{"entries":[
		{"name":"d","type":"dir","xattrs":{"trusted.overlay.redirect":"L2V0Yw==","trusted.overlay.opaque":"eQ==","user.a":"YQ=="}},
		{"name":"e","type":"dir"},{"name":"e/.wh..wh..opq","type":"reg"},
		{"name":"f","type":"reg","xattrs":{"security.capability":"AQ==","trusted.overlay.metacopy":"","trusted.overlay.origin":"AA=="}}]}`)
	got := func(p string) string {
		var names []string
		for _, a := range x.Xattrs(lookupPath(t, x, p)) {
			names = append(names, a.Name)
		}
		return strings.Join(names, ",")
	}
	for p, want := range map[string]string{"d": "user.a", "e": "trusted.overlay.opaque", "f": "security.capability"} {
		if got(p) != want {
			t.Errorf("%s has xattrs %q, want %q", p, got(p), want)
		}
	}
}

// TestEntryLimits: entries beyond the kernel's limits are refused by Build
// (for TOCs parsed elsewhere) as by Decode.
func TestEntryLimits(t *testing.T) {
	long := strings.Repeat("x", 256)
	for name, e := range map[string]*estargz.TOCEntry{
		"name past PATH_MAX":   {Name: strings.Repeat("a", 4097), Type: "dir"},
		"link past PATH_MAX":   {Name: "l", Type: "symlink", LinkName: strings.Repeat("a", 4097)},
		"1025 components":      {Name: strings.Repeat("a/", 1024) + "a", Type: "dir"},
		"xattr name past 255":  {Name: "d", Type: "dir", Xattrs: map[string][]byte{"user." + long: nil}},
		"xattr value past 64K": {Name: "d", Type: "dir", Xattrs: map[string][]byte{"user.a": make([]byte, 64<<10+1)}},
		"xattr names past 64K": {Name: "d", Type: "dir", Xattrs: func() map[string][]byte {
			m := map[string][]byte{}
			for i := range 300 {
				m[fmt.Sprintf("user.%03d%s", i, long[:240])] = nil
			}
			return m
		}()},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Build(context.Background(), &estargz.JTOC{Entries: []*estargz.TOCEntry{e}}, 1<<20)
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Build: %v, want an invalid argument", err)
			}
		})
	}
	ok := &estargz.TOCEntry{Name: strings.Repeat("a/", 1023) + "a", Type: "dir", Xattrs: map[string][]byte{"user.a": make([]byte, 64<<10)}}
	if _, err := Build(context.Background(), &estargz.JTOC{Entries: []*estargz.TOCEntry{ok}}, 1<<20); err != nil {
		t.Errorf("Build refused an entry at the limits: %v", err)
	}
}

// TestDecodeCountsWhileDecoding: a tiny document of many empty entries is
// refused once past the bound, before the rest is decoded.
func TestDecodeCountsWhileDecoding(t *testing.T) {
	doc := []byte(`{"entries":[{}` + strings.Repeat(`,{}`, 2_000_000) + `]}`)
	var err error
	alloc := allocatedBytes(func() {
		_, err = Decode(context.Background(), bytes.NewReader(doc), WithMaxEntries(1000))
	})
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Decode: %v, want an invalid argument", err)
	}
	if alloc > 10<<20 {
		t.Errorf("decoding 1000 entries of a %d byte document allocated %d bytes", len(doc), alloc)
	}
}

func TestDecodeRefusesMalformed(t *testing.T) {
	for _, s := range []string{
		`[]`, `{"entries":{}}`, `{"entries":[]} x`, `{"entries":[],"entries":[]}`, `{"entries":[1]}`,
		`{"version":"one"}`, `{"entries":[`, `{"x":[}`,
	} {
		if _, err := Decode(context.Background(), strings.NewReader(s)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Decode(%s): %v, want an invalid argument", s, err)
		}
	}
	toc, err := Decode(context.Background(), strings.NewReader(`{"Version":2,"x":{"y":[1,2,{"z":null}]},"Entries":[{"name":"a","type":"dir"}]}`+"\n\t "))
	if err != nil || toc.Version != 2 || len(toc.Entries) != 1 || toc.Entries[0].Name != "a" {
		t.Errorf("Decode: %+v, %v", toc, err)
	}
}

func allocatedBytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHardlinkChainLinear: a chain of 100k hardlinks, each naming the one
// before, resolves with each link followed once (it took quadratic time).
func TestHardlinkChainLinear(t *testing.T) {
	const n = 100_000
	es := []*estargz.TOCEntry{{Name: "f", Type: "reg", Mode: 0o644}}
	for i := range n {
		target := "f"
		if i > 0 {
			target = fmt.Sprintf("l%d", i-1)
		}
		es = append(es, &estargz.TOCEntry{Name: fmt.Sprintf("l%d", i), Type: "hardlink", LinkName: target})
	}
	x, err := Build(context.Background(), &estargz.JTOC{Entries: es}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := x.Lookup(Root, "f")
	if last, _ := x.Lookup(Root, fmt.Sprintf("l%d", n-1)); last != f || x.Attr(f).Nlink != n+1 {
		t.Errorf("last link is inode %d, file %d with %d links", last, f, x.Attr(f).Nlink)
	}
	// A cycle at the end of a long chain is still refused.
	es[0] = &estargz.TOCEntry{Name: "f", Type: "hardlink", LinkName: fmt.Sprintf("l%d", n-1)}
	if _, err := Build(context.Background(), &estargz.JTOC{Entries: es}, 1<<20); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Build of a 100k-link cycle: %v, want an invalid argument", err)
	}
}

// TestDeepTreeLinear: many files under one deep directory build in time
// linear in the names (the walk up to the root stops at a known directory).
func TestDeepTreeLinear(t *testing.T) {
	deep := strings.Repeat("d/", 1000)
	es := make([]*estargz.TOCEntry, 0, 50_000)
	for i := range cap(es) {
		es = append(es, &estargz.TOCEntry{Name: fmt.Sprintf("%sf%d", deep, i), Type: "reg"})
	}
	x, err := Build(context.Background(), &estargz.JTOC{Entries: es}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if x.Len() != 1+1000+len(es) {
		t.Errorf("%d inodes, want %d", x.Len(), 1+1000+len(es))
	}
}

// TestBuildCancelled: Build and Decode stop when their context is done.
func TestBuildCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Build(ctx, bigTOC(100_000), 1<<40); !errors.Is(err, context.Canceled) {
		t.Errorf("Build: %v, want context.Canceled", err)
	}
	if _, err := Decode(ctx, strings.NewReader(`{"entries":[{"name":"a","type":"dir"}]}`)); !errors.Is(err, context.Canceled) {
		t.Errorf("Decode: %v, want context.Canceled", err)
	}
}

func TestParseSHA256(t *testing.T) {
	if got, err := parseSHA256(dA); err != nil || got[0] != 0xaa || got[31] != 0xaa {
		t.Errorf("parseSHA256(%s) = %x, %v", dA, got, err)
	}
	for _, d := range []digest.Digest{digest.FromString("lazysnap"), "sha256:0123456789abcdef0123456789abcdef0123456789abcdeffedcba9876543210"} {
		want, _ := hex.DecodeString(d.Encoded())
		if got, err := parseSHA256(d.String()); err != nil || !bytes.Equal(got[:], want) {
			t.Errorf("parseSHA256(%s) = %x, %v", d, got, err)
		}
	}
	for _, s := range []string{"", "sha256:", "sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("a", 63),
		"sha256:" + strings.Repeat("a", 65), "sha256:" + strings.Repeat("g", 64), "SHA256:" + strings.Repeat("a", 64),
		"sha512:" + strings.Repeat("a", 128), "md5:d41d8cd98f00b204e9800998ecf8427e",
		// One bad character among good ones, at either end.
		"sha256:" + strings.Repeat("a", 63) + "\x00", "sha256:/" + strings.Repeat("0", 63),
		"sha256:" + strings.Repeat("f", 63) + "\xff"} {
		if _, err := parseSHA256(s); err == nil {
			t.Errorf("parseSHA256(%q) accepted it", s)
		}
	}
}

// TestHardlinkEntryMetadataWins: tar extraction (containerd's among them)
// applies a hardlink entry's mode, owner, time and xattrs to the file all
// its names share, the last entry winning; the index shows the same, so a
// lazily mounted layer looks like the unpacked one (critest's substitute
// images, written with mode 0 on their links, showed the difference).
func TestHardlinkEntryMetadataWins(t *testing.T) {
	x := mustBuild(t, `{"entries":[
		{"name":"x","type":"dir","mode":493},
		{"name":"x/f","type":"reg","mode":493,"uid":0,"gid":0,"size":0,"modtime":"2020-01-01T00:00:00Z"},
		{"name":"x/g","type":"hardlink","linkName":"x/f","mode":384,"uid":1234,"gid":4321,
		 "modtime":"2021-01-01T00:00:00Z","xattrs":{"user.k":"dg=="}}]}`)
	for _, p := range []string{"x/f", "x/g"} {
		id := lookupPath(t, x, p)
		a := x.Attr(id)
		if a.Mode&0o7777 != 0o600 || a.UID != 1234 || a.GID != 4321 || a.Mtime != 1609459200 {
			t.Errorf("%s: mode %o owner %d:%d mtime %d; want the link entry's 600 1234:4321 1609459200",
				p, a.Mode&0o7777, a.UID, a.GID, a.Mtime)
		}
		if v, ok := x.Xattr(id, "user.k"); !ok || string(v) != "v" {
			t.Errorf("%s: xattr user.k = %q, %v; want the link entry's", p, v, ok)
		}
	}
}

// BenchmarkParseSHA256 parses chunk digests as a TOC holds them: random
// hex, two or more per file.
func BenchmarkParseSHA256(b *testing.B) {
	ds := make([]string, 1024)
	for i := range ds {
		ds[i] = digest.FromString(strconv.Itoa(i)).String()
	}
	b.SetBytes(int64(len(ds[0])))
	for i := 0; b.Loop(); i++ {
		if _, err := parseSHA256(ds[i%len(ds)]); err != nil {
			b.Fatal(err)
		}
	}
}
