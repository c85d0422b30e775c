package layer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/fs/index/indextest"
	"github.com/lazysnap/lazysnap/fs/remote"
	"github.com/lazysnap/lazysnap/internal/inflate"
)

// memBlob is a layer blob in memory.
type memBlob struct{ data []byte }

func (b memBlob) Digest() digest.Digest { return digest.FromBytes(b.data) }
func (b memBlob) Size() int64           { return int64(len(b.data)) }
func (b memBlob) Stats() remote.Stats   { return remote.Stats{} }
func (b memBlob) TakeTail() []byte      { return nil }
func (b memBlob) Fetch(_ context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b.data[off : off+n])), nil
}

// offsetBlob is a blob of which only the bytes from off on are in memory.
type offsetBlob struct {
	data []byte
	off  int64
}

func (b offsetBlob) Digest() digest.Digest { return digest.FromBytes(b.data) }
func (b offsetBlob) Size() int64           { return b.off + int64(len(b.data)) }
func (b offsetBlob) Stats() remote.Stats   { return remote.Stats{} }
func (b offsetBlob) TakeTail() []byte      { return nil }
func (b offsetBlob) Fetch(_ context.Context, off, n int64) (io.ReadCloser, error) {
	if off < b.off {
		return nil, fmt.Errorf("reading at %d, before %d", off, b.off)
	}
	return io.NopCloser(bytes.NewReader(b.data[off-b.off : off-b.off+n])), nil
}

// gzipTOCHeader is the tar header of an eStargz TOC of size bytes.
func gzipTOCHeader(t testing.TB, size int64) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := tar.NewWriter(&b).WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: estargz.TOCTarName, Size: size}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// gzipFooter is the eStargz footer of a blob whose TOC starts at off.
func gzipFooter(t testing.TB, off int64) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := new(estargz.GzipCompressor).WriteTOCAndFooter(&b, off, &estargz.JTOC{}, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()[b.Len()-estargz.FooterSize:]
}

// gzipBlob is an eStargz blob without files whose TOC is tocJSON, as
// estargz writes it: one gzip member holding a tar of the TOC, then the
// footer.
func gzipBlob(t testing.TB, tocJSON []byte) memBlob {
	t.Helper()
	return memBlob{append(tocMember(t, estargz.TOCTarName, tocJSON), gzipFooter(t, 0)...)}
}

// zstdBlob is a zstd:chunked blob without files whose TOC frame is
// compressed (a zstd stream of the TOC's JSON), laid out as the estargz
// zstdchunked writer lays it out.
func zstdBlob(compressed []byte, rawSize int) memBlob {
	skippable := func(b []byte) []byte {
		out := binary.LittleEndian.AppendUint32(nil, 0x184D2A50)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(b)))
		return append(out, b...)
	}
	footer := binary.LittleEndian.AppendUint64(nil, 8) // the TOC's offset, past its frame header
	footer = binary.LittleEndian.AppendUint64(footer, uint64(len(compressed)))
	footer = binary.LittleEndian.AppendUint64(footer, uint64(rawSize))
	footer = binary.LittleEndian.AppendUint64(footer, 1)
	footer = append(footer, "GnUlInUx"...)
	return memBlob{append(skippable(compressed), skippable(footer)...)}
}

func zstdTOCBlob(t testing.TB, tocJSON []byte) memBlob {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return zstdBlob(zw.EncodeAll(tocJSON, nil), len(tocJSON))
}

// formats returns how to build a blob with a given TOC in each format.
func formats() map[string]func(testing.TB, []byte) memBlob {
	return map[string]func(testing.TB, []byte) memBlob{"gzip": gzipBlob, "zstd": zstdTOCBlob}
}

func TestReadTOCFormats(t *testing.T) {
	toc := []byte(`{"version":1,"unknown":{"x":[1,{"y":null}]},"entries":[{"name":"d","type":"dir"},` +
		`{"name":"d/f","type":"reg","mode":420}]}` + "\n")
	for name, blob := range formats() {
		t.Run(name, func(t *testing.T) {
			b := blob(t, toc)
			got, err := ReadTOC(context.Background(), b, digest.FromBytes(toc))
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest != digest.FromBytes(toc) || got.Index.Len() != 3 {
				t.Errorf("TOC %s with %d inodes and %d files", got.Digest, got.Index.Len(), got.Index.Files())
			}
		})
	}
}

// TestReadTOCChecksDigestFirst: a TOC that is not the one the manifest names
// is refused as such, before its JSON (here broken) is decoded.
func TestReadTOCChecksDigestFirst(t *testing.T) {
	for name, blob := range formats() {
		t.Run(name, func(t *testing.T) {
			_, err := ReadTOC(context.Background(), blob(t, []byte(`{"entries":[`)), digest.FromString("another TOC"))
			if !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("ReadTOC: %v, want a failed precondition (digest mismatch)", err)
			}
		})
	}
}

// gzipBomb is an eStargz blob whose TOC is a gzip member of a few MiB that
// inflates to size bytes of JSON white space. Deflate data after a flush
// starts on a byte boundary and refers only to the window before it, all
// spaces, so one flushed MiB is repeated instead of compressing size bytes.
func gzipBomb(t testing.TB, size int64) memBlob {
	t.Helper()
	const unit = 1 << 20
	spaces := bytes.Repeat([]byte(" "), unit)
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zw.Write(gzipTOCHeader(t, size))
	zw.Write(spaces)
	zw.Flush()
	mark := b.Len()
	zw.Write(spaces)
	zw.Flush()
	seg := bytes.Clone(b.Bytes()[mark:])
	for n := int64(2 * unit); n < size; n += unit {
		b.Write(seg)
	}
	// No gzip trailer: the stream is refused long before it ends.
	b.Write(gzipFooter(t, 0))
	return memBlob{b.Bytes()}
}

// zstdBomb is a zstd:chunked blob whose TOC is one zstd frame of run-length
// blocks: 4 bytes per 128 KiB of JSON white space.
func zstdBomb(size int64) memBlob {
	const block = 128 << 10
	frame := binary.LittleEndian.AppendUint32(nil, 0xFD2FB528)
	frame = append(frame, 0x00, 7<<3) // no content size, a 128 KiB window
	for n := int64(0); n < size; n += block {
		h := uint32(1<<1 | block<<3) // an RLE block
		if n+block >= size {
			h |= 1 // the last block
		}
		frame = append(frame, byte(h), byte(h>>8), byte(h>>16), ' ')
	}
	return zstdBlob(frame, int(size))
}

// allocated runs f and returns how many bytes it allocated on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestReadTOCRefusesBomb: a TOC of a few MiB that inflates to 4 GiB is
// refused once it passes the decompressed bound, without inflating the rest
// or holding it in memory.
func TestReadTOCRefusesBomb(t *testing.T) {
	const size = 4 << 30
	for name, b := range map[string]memBlob{"gzip": gzipBomb(t, size), "zstd": zstdBomb(size)} {
		t.Run(name, func(t *testing.T) {
			var err error
			start := time.Now()
			alloc := allocated(func() { _, err = ReadTOC(context.Background(), b, digest.FromString("x")) })
			took := time.Since(start)
			t.Logf("%d byte TOC inflating to %d bytes: refused after %v, %d bytes allocated: %v", len(b.data), int64(size), took, alloc, err)
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("ReadTOC: %v, want an invalid argument", err)
			}
			// Generous bounds: inflating 4 GiB takes far longer, holding it far more.
			if limit := bombTimeLimit(); took > limit {
				t.Errorf("refused after %v, more than %v: the TOC was inflated past the bound", took, limit)
			}
			if alloc > 100<<20 {
				t.Errorf("allocated %d bytes refusing the TOC, want under 100 MiB", alloc)
			}
		})
	}
}

// bombTimeLimit is how long refusing a TOC bomb may take: inflating 256 MiB
// with the race detector's instrumentation of compress/flate is several
// times slower.
func bombTimeLimit() time.Duration {
	if raceEnabled {
		return time.Minute
	}
	return 5 * time.Second
}

// TestReadTOCRefusesLongName: a TOC entry named with 5 million "a/"
// components is refused, without building millions of directories.
func TestReadTOCRefusesLongName(t *testing.T) {
	toc := []byte(`{"entries":[{"name":"` + strings.Repeat("a/", 5_000_000) + `f","type":"reg"}]}`)
	b := gzipBlob(t, toc)
	var err error
	alloc := allocated(func() { _, err = ReadTOC(context.Background(), b, digest.FromBytes(toc)) })
	t.Logf("%d byte name: %d bytes allocated: %v", len(toc), alloc, err)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("ReadTOC: %v, want an invalid argument for the name's length", err)
	}
	if alloc > 100<<20 {
		t.Errorf("allocated %d bytes refusing a %d byte TOC, want under 100 MiB", alloc, len(toc))
	}
}

// TestReadTOCRefusesDeepName: a name within PATH_MAX but 2000 components
// deep is refused.
func TestReadTOCRefusesDeepName(t *testing.T) {
	toc := []byte(`{"entries":[{"name":"` + strings.Repeat("a/", 1999) + `f","type":"reg"}]}`)
	_, err := ReadTOC(context.Background(), gzipBlob(t, toc), digest.FromBytes(toc))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "deeper than") {
		t.Fatalf("ReadTOC: %v, want an invalid argument for the name's depth", err)
	}
}

// TestReadTOCRefusesManyEntries: 2 million tiny entries are refused by
// their count while they are decoded.
func TestReadTOCRefusesManyEntries(t *testing.T) {
	var sb strings.Builder
	sb.WriteString(`{"entries":[`)
	for i := range 2_000_000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"name":"d","type":"dir"}`)
	}
	sb.WriteString(`]}`)
	toc := []byte(sb.String())
	_, err := ReadTOC(context.Background(), gzipBlob(t, toc), digest.FromBytes(toc))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "entries") {
		t.Fatalf("ReadTOC: %v, want an invalid argument for the entry count", err)
	}
}

// TestReadTOCCancelled: a cancelled mount stops reading its TOC.
func TestReadTOCCancelled(t *testing.T) {
	toc := []byte(`{"entries":[{"name":"d","type":"dir"}]}`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ReadTOC(ctx, gzipBlob(t, toc), digest.FromBytes(toc))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadTOC: %v, want it cancelled", err)
	}
}

// FuzzReadTOC feeds TOC JSON, in either format and with its right digest,
// to ReadTOC: it must never panic nor hang, and what it accepts must be
// sane.
func FuzzReadTOC(f *testing.F) {
	d := "sha256:" + strings.Repeat("a", 64)
	for _, s := range []string{
		`{"version":1,"entries":[{"name":"d","type":"dir"},{"name":"d/f","type":"reg","size":3,"offset":0,"digest":"` + d + `"}]}`,
		`{"entries":[{"name":"a","type":"hardlink","linkName":"b"},{"name":"b","type":"reg"}]}`,
		`{"entries":[{"name":"x","type":"dir","xattrs":{"trusted.overlay.redirect":"Lw==","user.a":"YQ=="}}]}`,
		`{"ENTRIES":null,"other":[[[{}]]]}  `,
		`{"entries":[null]}`,
		`[]`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, toc []byte, zstd bool) {
		b := gzipBlob(t, toc)
		if zstd {
			b = zstdTOCBlob(t, toc)
		}
		got, err := ReadTOC(context.Background(), b, digest.FromBytes(toc))
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("ReadTOC: %v: not an invalid argument", err)
			}
			return
		}
		x := got.Index
		for id := range x.RegularFiles() {
			if x.ContentKey(id) == "" || x.ContentKey(id).Validate() != nil {
				t.Fatalf("file %d has content key %q", id, x.ContentKey(id))
			}
		}
		for id := index.ID(0); x.Valid(id); id++ {
			for _, a := range x.Xattrs(id) {
				if strings.HasPrefix(a.Name, "trusted.") && a.Name != "trusted.overlay.opaque" {
					t.Fatalf("xattr %q exposed", a.Name)
				}
			}
		}
	})
}

// TestReadTOCAhead: a TOC read before its digest is known is handed out
// only against the digest it has; any other is refused as ReadTOC refuses
// it, and a broken TOC fails the read itself.
func TestReadTOCAhead(t *testing.T) {
	toc := []byte(`{"version":1,"entries":[{"name":"d","type":"dir"},{"name":"d/f","type":"reg","mode":420}]}` + "\n")
	for name, blob := range formats() {
		t.Run(name, func(t *testing.T) {
			u, err := ReadTOCAhead(context.Background(), blob(t, toc))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.Verify(digest.FromString("another TOC")); !errdefs.IsFailedPrecondition(err) {
				t.Errorf("Verify(another digest): %v, want a failed precondition", err)
			}
			got, err := u.Verify(digest.FromBytes(toc))
			if err != nil {
				t.Fatal(err)
			}
			if got.Index.Len() != 3 {
				t.Errorf("TOC with %d inodes, want 3", got.Index.Len())
			}
			if _, err := ReadTOCAhead(context.Background(), blob(t, []byte(`{"entries":[`))); !errdefs.IsInvalidArgument(err) {
				t.Errorf("ReadTOCAhead(broken JSON): %v, want invalid argument", err)
			}
		})
	}
}

// BenchmarkReadTOC measures what a Mount waits for once the TOC's bytes are
// in memory: decompressing it, checking its digest, decoding it and building
// its index, for a gzip TOC shaped like a real big layer's.
func BenchmarkReadTOC(b *testing.B) {
	toc, err := json.Marshal(indextest.RealTOC(40_000, 1))
	if err != nil {
		b.Fatal(err)
	}
	// The TOC's offsets reach about 4 GB into the blob: the TOC lies after
	// them, past a payload the blob only pretends to hold.
	const payload = 8 << 30
	tail := gzipBlob(b, toc).data
	tail = append(tail[:len(tail)-estargz.FooterSize], gzipFooter(b, payload)...)
	blob, want := offsetBlob{tail, payload}, digest.FromBytes(toc)
	b.SetBytes(int64(len(toc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadTOC(context.Background(), blob, want); err != nil {
			b.Fatal(err)
		}
	}
}

// TestInflateTOCAsDigestAndDecode: the TOC decompressed once and held in
// memory gets the digest and the index that decompressing it twice, in
// constant memory (the way of a TOC too large to hold), gives.
func TestInflateTOCAsDigestAndDecode(t *testing.T) {
	toc, err := json.Marshal(indextest.RealTOC(3000, 2))
	if err != nil {
		t.Fatal(err)
	}
	for name, blob := range formats() {
		t.Run(name, func(t *testing.T) {
			b := blob(t, toc)
			var d estargz.Decompressor = new(estargz.GzipDecompressor)
			raw := b.data[:len(b.data)-estargz.FooterSize]
			if name == "zstd" {
				d = new(zstdchunked.Decompressor)
				raw = b.data[8 : 8+binary.LittleEndian.Uint32(b.data[4:])]
			}
			js, got, err := inflateTOC(context.Background(), d, raw)
			if err != nil {
				t.Fatal(err)
			}
			want, err := digestTOC(context.Background(), d, raw)
			if err != nil || got != want || got != digest.FromBytes(toc) || !bytes.Equal(js, toc) {
				t.Fatalf("digest %s, digestTOC's %s (%v), the TOC's %s", got, want, err, digest.FromBytes(toc))
			}
			x1, err := buildTOC(context.Background(), js, 1<<40, nil)
			if err != nil {
				t.Fatal(err)
			}
			x2, err := decodeTOC(context.Background(), d, raw, 1<<40, nil)
			if err != nil || !reflect.DeepEqual(x1, x2) {
				t.Fatalf("the index differs from decodeTOC's (%v)", err)
			}
		})
	}
}

// TestReadTOCRefusesTruncated: a TOC whose compressed stream is cut short
// is refused, not read as far as it goes.
func TestReadTOCRefusesTruncated(t *testing.T) {
	toc, err := json.Marshal(indextest.RealTOC(3000, 3))
	if err != nil {
		t.Fatal(err)
	}
	full := gzipBlob(t, toc).data
	member := full[:len(full)-estargz.FooterSize]
	for _, cut := range []int{8, 1000, len(member) / 2, len(member) - 20} {
		b := append(bytes.Clone(member[:len(member)-cut]), gzipFooter(t, 0)...)
		if _, err := ReadTOC(context.Background(), memBlob{b}, digest.FromBytes(toc)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("cut %d bytes short: ReadTOC: %v, want an invalid argument", cut, err)
		}
	}
}

// tocMember is the gzip member of a TOC: a tar whose first entry is name,
// holding js.
func tocMember(t testing.TB, name string, js []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(js))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(js); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestTOCWholeMatchesStream: a gzip TOC decompressed in one libdeflate call
// (gunzipTOCWhole) is the JSON the stream gives (openTOCJSON), which CI's
// build (with libdeflate) would otherwise never compare; what it declines
// (over the bound, another first entry, a corrupt member) is left to the
// stream, which reports the error.
func TestTOCWholeMatchesStream(t *testing.T) {
	if !inflate.Available {
		t.Skip("built without libdeflate: every TOC is streamed")
	}
	js, err := json.Marshal(indextest.RealTOC(2000, 1))
	if err != nil {
		t.Fatal(err)
	}
	raw := tocMember(t, estargz.TOCTarName, js)
	d := new(estargz.GzipDecompressor)
	whole, ok := gunzipTOCWhole(d, raw, 1<<30)
	if !ok {
		t.Fatal("a well-formed TOC member was not decompressed whole")
	}
	r, err := openTOCJSON(d, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	streamed, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(whole, streamed) || !bytes.Equal(whole, js) {
		t.Fatalf("whole %d bytes, streamed %d, written %d: they differ", len(whole), len(streamed), len(js))
	}
	corrupt := bytes.Clone(raw)
	corrupt[len(corrupt)/2] ^= 0xff
	for name, c := range map[string]struct {
		raw   []byte
		limit int
	}{
		"over the bound":     {raw, len(js) / 2},
		"another first file": {tocMember(t, "etc/passwd", js), 1 << 30},
		"corrupt":            {corrupt, 1 << 30},
		"cut":                {raw[:len(raw)-9], 1 << 30},
	} {
		if _, ok := gunzipTOCWhole(d, c.raw, c.limit); ok {
			t.Errorf("%s: decompressed whole", name)
		}
	}
	if _, ok := gunzipTOCWhole(new(zstdchunked.Decompressor), raw, 1<<30); ok {
		t.Error("a zstd:chunked TOC taken for gzip")
	}
}
