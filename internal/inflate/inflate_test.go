package inflate

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/gzip"
)

func gz(t testing.TB, level int, data []byte, name string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	zw.Name = name // sets FNAME, a header field a reader must skip
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func needLibdeflate(t testing.TB) {
	if !Available {
		t.Skip("built without libdeflate (go test -tags libdeflate, cgo on)")
	}
}

// TestGunzipMatchesStreamingReader: what Gunzip returns is what
// klauspost's streaming reader returns, for members of every size class a
// layer holds and at every level, and TrailerSize is the size.
func TestGunzipMatchesStreamingReader(t *testing.T) {
	t.Parallel()
	needLibdeflate(t)
	var g Gunzipper
	corpus := machineFiles(t, 4<<20)
	for _, size := range []int{0, 1, 4096, 65536, 1 << 20, len(corpus)} {
		for _, level := range []int{gzip.NoCompression, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression} {
			data := corpus[:size]
			member := gz(t, level, data, "f")
			n, ok := TrailerSize(member)
			if !ok || n != int64(size) {
				t.Fatalf("size %d level %d: TrailerSize = %d, %v", size, level, n, ok)
			}
			dst := make([]byte, n)
			got, err := g.Gunzip(dst, member)
			if err != nil || !bytes.Equal(dst[:got], data) {
				t.Fatalf("size %d level %d: Gunzip = %d, %v; equal %v", size, level, got, err, bytes.Equal(dst[:got], data))
			}
		}
	}
}

// TestGunzipRefuses: a member that lies about its content, is cut short,
// does not fit, or is followed by another is refused with the error that
// says which, never returned as data.
func TestGunzipRefuses(t *testing.T) {
	t.Parallel()
	needLibdeflate(t)
	var g Gunzipper
	data := bytes.Repeat([]byte("lazysnap inflate "), 1000)
	member := gz(t, gzip.DefaultCompression, data, "")
	flip := func(i int) []byte {
		b := bytes.Clone(member)
		b[i] ^= 0x55
		return b
	}
	cases := []struct {
		name string
		src  []byte
		dst  int
		want error
	}{
		{"crc", flip(len(member) - 8), len(data), ErrCorrupt},
		{"isize", flip(len(member) - 1), len(data), ErrCorrupt},
		{"magic", flip(0), len(data), ErrCorrupt},
		// A flipped bit in the deflate data may decode to more bytes.
		{"deflate data", flip(len(member) / 2), len(data), errCorruptOrLonger},
		{"truncated", member[:len(member)-3], len(data), ErrCorrupt},
		{"empty", nil, len(data), ErrCorrupt},
		{"buffer too small", member, len(data) - 1, ErrShortBuffer},
		{"two members", append(bytes.Clone(member), member...), 2 * len(data), ErrTrailingData},
		{"garbage after", append(bytes.Clone(member), 0), len(data), ErrTrailingData},
	}
	for _, c := range cases {
		n, err := g.Gunzip(make([]byte, c.dst), c.src)
		if c.want == errCorruptOrLonger && (errors.Is(err, ErrCorrupt) || errors.Is(err, ErrShortBuffer)) {
			continue
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Gunzip = %d, %v; want %v", c.name, n, err, c.want)
		}
	}
}

// TestGunzipFirst takes the members of a concatenation one at a time, as
// the layer's stream does where the tar headers between two files are
// members of their own.
func TestGunzipFirst(t *testing.T) {
	t.Parallel()
	needLibdeflate(t)
	var g Gunzipper
	parts := [][]byte{[]byte("header"), nil, bytes.Repeat([]byte("content "), 5000)}
	var src []byte
	for _, p := range parts {
		src = append(src, gz(t, gzip.DefaultCompression, p, "")...)
	}
	dst := make([]byte, 1<<20)
	for i, p := range parts {
		out, in, err := g.GunzipFirst(dst, src)
		if err != nil || !bytes.Equal(dst[:out], p) || in <= 0 || in > len(src) {
			t.Fatalf("member %d: %d bytes out, %d in, %v", i, out, in, err)
		}
		src = src[in:]
	}
	if len(src) != 0 {
		t.Errorf("%d bytes left after the last member", len(src))
	}
	if _, _, err := g.GunzipFirst(dst, src); !errors.Is(err, ErrCorrupt) {
		t.Errorf("no member left: %v, want ErrCorrupt", err)
	}
}

var errCorruptOrLonger = errors.New("ErrCorrupt or ErrShortBuffer")

// TestGunzipConcurrent: pooled decompressors are never shared by two calls.
func TestGunzipConcurrent(t *testing.T) {
	t.Parallel()
	needLibdeflate(t)
	var g Gunzipper
	corpus := machineFiles(t, 1<<20)
	done := make(chan error)
	for w := 0; w < 8; w++ {
		go func() {
			data := corpus[w*1000:]
			member := gz(t, gzip.BestSpeed, data, "")
			for i := 0; i < 20; i++ {
				dst := make([]byte, len(data))
				if n, err := g.Gunzip(dst, member); err != nil || !bytes.Equal(dst[:n], data) {
					done <- errors.New("wrong result under concurrency")
					return
				}
			}
			done <- nil
		}()
	}
	for w := 0; w < 8; w++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkGunzip compares libdeflate with klauspost's streaming reader
// (what fused used before) on the machine's own shared libraries, in 64 KiB
// and 1 MiB members as lazyconv writes small files and large files' chunks.
// b.SetBytes counts compressed bytes, as a link brings them.
func BenchmarkGunzip(b *testing.B) {
	corpus := machineFiles(b, 64<<20)
	for _, chunk := range []int{64 << 10, 1 << 20} {
		var members [][]byte
		compressed := 0
		for off := 0; off < len(corpus); off += chunk {
			m := gz(b, gzip.DefaultCompression, corpus[off:min(off+chunk, len(corpus))], "")
			members = append(members, m)
			compressed += len(m)
		}
		dst := make([]byte, chunk)
		name := map[int]string{64 << 10: "member=64KiB", 1 << 20: "member=1MiB"}[chunk]
		b.Run(name+"/libdeflate", func(b *testing.B) {
			needLibdeflate(b)
			var g Gunzipper
			b.SetBytes(int64(compressed))
			for b.Loop() {
				for _, m := range members {
					if _, err := g.Gunzip(dst, m); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(name+"/klauspost", func(b *testing.B) {
			var zr gzip.Reader
			b.SetBytes(int64(compressed))
			for b.Loop() {
				for _, m := range members {
					if err := zr.Reset(bytes.NewReader(m)); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(&zr, dst[:0]); err != nil {
						b.Fatal(err)
					}
					if _, err := io.Copy(io.Discard, &zr); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// machineFiles returns up to limit bytes of the machine's shared libraries
// and binaries: real data compresses as a layer's does.
func machineFiles(t testing.TB, limit int) []byte {
	t.Helper()
	var out []byte
	for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/bin"} {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || len(out) >= limit {
				return filepath.SkipDir
			}
			if d.Type().IsRegular() {
				if b, err := os.ReadFile(p); err == nil {
					out = append(out, b...)
				}
			}
			return nil
		})
	}
	if len(out) < limit {
		t.Skipf("the machine has only %d bytes of libraries", len(out))
	}
	return out[:limit]
}
