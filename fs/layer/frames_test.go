package layer

import (
	"bytes"
	"compress/gzip"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
)

func gzipped(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zstdFrame(t testing.TB, s string) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll([]byte(s), nil)
}

// frameFormat is one layer format's frames: how to write one, and a layer
// that reads them (as much of one as frameReader looks at).
type frameFormat struct {
	name   string
	encode func(testing.TB, string) []byte
	layer  *Layer
}

func frameFormats() []frameFormat {
	return []frameFormat{
		{"gzip", gzipped, &Layer{toc: &TOC{decompressor: new(estargz.GzipDecompressor)}}},
		{"zstd", zstdFrame, &Layer{toc: &TOC{decompressor: new(zstdchunked.Decompressor)}}},
	}
}

// readFrameWith decompresses frame into out as readFrame does: through a
// LimitReader, released after.
func readFrameWith(l *Layer, frame []byte, out *bytes.Buffer) error {
	zr, release, err := l.frameReader(io.LimitReader(bytes.NewReader(frame), int64(len(frame))))
	if err != nil {
		return err
	}
	defer release()
	out.Reset()
	_, err = out.ReadFrom(zr)
	return err
}

// TestFramesAfterBadFrames decodes good frames after a frame with a bad
// header and one cut short: a reused reader starts over each time.
func TestFramesAfterBadFrames(t *testing.T) {
	for _, ff := range frameFormats() {
		t.Run(ff.name, func(t *testing.T) {
			long := strings.Repeat("lazysnap ", 20000)
			good := ff.encode(t, long)
			frames := []struct {
				data    []byte
				want    string
				wantErr bool
			}{
				{ff.encode(t, "alpha"), "alpha", false},
				{[]byte("not compressed at all"), "", true},
				{good[:len(good)/2], "", true},
				{good, long, false},
				{ff.encode(t, "beta"), "beta", false},
			}
			var out bytes.Buffer
			for i, f := range frames {
				err := readFrameWith(ff.layer, f.data, &out)
				if f.wantErr {
					if err == nil {
						t.Fatalf("frame %d: no error", i)
					}
					continue
				}
				if err != nil || out.String() != f.want {
					t.Fatalf("frame %d: %v, %d bytes (want %d)", i, err, out.Len(), len(f.want))
				}
			}
		})
	}
}

// TestFramesReused checks that a frame costs no new reader: a fresh gzip
// one allocates more than 40 KiB, and estargz's zstdchunked.Decompressor
// made a zstd.Decoder per frame, with a goroutine per core, which made
// zstd:chunked layers slower to start than gzip ones.
func TestFramesReused(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	for _, ff := range frameFormats() {
		t.Run(ff.name, func(t *testing.T) {
			frame := ff.encode(t, strings.Repeat("x", 4096))
			out := bytes.NewBuffer(make([]byte, 0, 8192))
			if err := readFrameWith(ff.layer, frame, out); err != nil {
				t.Fatal(err)
			}
			const runs = 100
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				if err := readFrameWith(ff.layer, frame, out); err != nil || out.Len() != 4096 {
					t.Fatalf("%d bytes, %v", out.Len(), err)
				}
			}
			runtime.ReadMemStats(&after)
			if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 4<<10 {
				t.Errorf("%d bytes allocated per frame; want at most 4 KiB (the reader is reused)", per)
			}
		})
	}
}

// TestZstdFrameWindowBounded decodes a frame with the 8 MiB window
// producers use and refuses one asking for more than zstdMaxWindow instead
// of allocating it.
func TestZstdFrameWindowBounded(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	zl := frameFormats()[1].layer
	for _, tc := range []struct {
		window int
		ok     bool
	}{{8 << 20, true}, {2 * zstdMaxWindow, false}} {
		zw, err := zstd.NewWriter(nil, zstd.WithWindowSize(tc.window), zstd.WithSingleSegment(false))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		zw.Reset(&buf)
		if _, err := zw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = readFrameWith(zl, buf.Bytes(), &out)
		if tc.ok && (err != nil || !bytes.Equal(out.Bytes(), data)) {
			t.Errorf("%d MiB window: %v, %d bytes; want the frame decoded", tc.window>>20, err, out.Len())
		}
		if !tc.ok && err == nil {
			t.Errorf("a frame with a %d MiB window decoded (%d bytes); want an error", tc.window>>20, out.Len())
		}
	}
}
