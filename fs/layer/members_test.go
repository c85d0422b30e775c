package layer

import (
	"bytes"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/lazysnap/lazysnap/internal/inflate"
)

// textish is n bytes over a 16-letter alphabet: it compresses about 2:1,
// so inflating it is real work, unlike random bytes.
func textish(n int, seed uint64) []byte {
	b := randomData(n, seed)
	for i := range b {
		b[i] = 'a' + b[i]%16
	}
	return b
}

// gzipMembers returns each part as a gzip member of its own, and where
// each member starts in their concatenation.
func gzipMembers(t testing.TB, parts ...[]byte) (blob []byte, starts []int64) {
	t.Helper()
	var b bytes.Buffer
	for _, p := range parts {
		starts = append(starts, int64(b.Len()))
		zw, err := gzip.NewWriterLevel(&b, gzip.DefaultCompression)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(p)
		zw.Close()
	}
	return b.Bytes(), starts
}

// TestMemberReaderSameAsStream: the stream decompressed piece by piece
// yields exactly what klauspost's multistream reader yields over the whole
// blob, bytes and error, whether the bounds are right, missing, off by
// some bytes (a TOC that lies), or join two members in a piece, and
// whether the blob is whole, corrupt or cut short. (What a failing stream
// yields before its error is hashed and fails the diff_id; a chunk taken
// from it is stored only if its digest matches.)
func TestMemberReaderSameAsStream(t *testing.T) {
	t.Parallel()
	parts := [][]byte{textish(3000, 1), textish(70000, 2), nil, textish(1<<20, 3), textish(10, 4), textish(500, 5)}
	blob, starts := gzipMembers(t, parts...)
	corrupt := bytes.Clone(blob)
	corrupt[starts[3]+1000] ^= 0x20
	cases := []struct {
		name   string
		blob   []byte
		bounds []int64
	}{
		{"exact", blob, starts[1:]},
		{"no bounds", blob, nil},
		{"three members in a piece", blob, []int64{starts[1], starts[4]}},
		{"a bound inside a member", blob, []int64{starts[1], starts[1] + 100, starts[3]}},
		{"bounds past the end", blob, []int64{starts[1], int64(len(blob)) + 10}},
		{"corrupt", corrupt, starts[1:]},
		{"cut short", blob[:starts[3]+500], starts[1:]},
	}
	for _, c := range cases {
		zr, err := gzip.NewReader(bytes.NewReader(c.blob))
		if err != nil {
			t.Fatal(err)
		}
		want, wantErr := io.ReadAll(zr)
		m := &members{r: bytes.NewReader(c.blob), bounds: c.bounds, gz: new(inflate.Gunzipper)}
		got, err := io.ReadAll(m)
		if (err == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, %v; the stream gave %d bytes, %v (equal %v)", c.name, len(got), err, len(want), wantErr, bytes.Equal(got, want))
		}
	}
}

// BenchmarkStreamMembers decompresses a 64 MiB stream of 1 MiB members as
// the diff_id stream does, piece by piece (memberReader) and with
// klauspost's streaming reader; b.SetBytes counts compressed bytes.
func BenchmarkStreamMembers(b *testing.B) {
	var parts [][]byte
	for i := range 64 {
		parts = append(parts, textish(1<<20, uint64(i)))
	}
	blob, starts := gzipMembers(b, parts...)
	b.Run("members", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			m := &members{r: bytes.NewReader(blob), bounds: starts[1:], gz: new(inflate.Gunzipper)}
			if _, err := io.Copy(io.Discard, m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stream", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			zr, err := gzip.NewReader(bytes.NewReader(blob))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, zr); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestMemberBoundsOfEStargz: in a layer estargz wrote, the TOC's frame
// starts and ends cut the blob into single members up to the TOC, so
// libdeflate takes every piece but the last (the TOC and the footer).
func TestMemberBoundsOfEStargz(t *testing.T) {
	t.Parallel()
	if !inflate.Available {
		t.Skip("built without libdeflate")
	}
	tl := buildTestLayer(t, testChunk,
		testFile{"a/small", textish(100, 1)},
		testFile{"a/b/big", textish(5*testChunk+7, 2)},
		testFile{"c", textish(20000, 3)},
		testFile{"empty", nil})
	l := tl.open(t)
	bounds := l.memberBounds()
	m := &members{r: bytes.NewReader(tl.blob.data), bounds: bounds, gz: &l.frames.whole}
	got, err := io.ReadAll(m)
	zr, zerr := gzip.NewReader(bytes.NewReader(tl.blob.data))
	if zerr != nil {
		t.Fatal(zerr)
	}
	want, _ := io.ReadAll(zr)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%v, %d bytes; want the stream's %d", err, len(got), len(want))
	}
	if last := bounds[len(bounds)-1]; m.pos != last {
		t.Errorf("pieces decoded whole up to %d; want up to %d, the last bound (%d bounds)", m.pos, last, len(bounds))
	}
}
