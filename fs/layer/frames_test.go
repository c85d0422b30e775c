package layer

import (
	"bytes"
	"compress/gzip"
	"io"
	"runtime"
	"strings"
	"testing"
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

// readFrameWith decompresses frame into out with g as readFrame does:
// through a LimitReader, released after.
func readFrameWith(g *gzipFrames, frame []byte, out *bytes.Buffer) error {
	zr, release, err := g.open(io.LimitReader(bytes.NewReader(frame), int64(len(frame))))
	if err != nil {
		return err
	}
	defer release()
	out.Reset()
	_, err = out.ReadFrom(zr)
	return err
}

// TestGzipFramesAfterBadFrames decodes good frames after a frame with a bad
// header and one cut short: a reused reader starts over each time.
func TestGzipFramesAfterBadFrames(t *testing.T) {
	var g gzipFrames
	long := strings.Repeat("lazysnap ", 20000)
	good := gzipped(t, long)
	frames := []struct {
		data    []byte
		want    string
		wantErr bool
	}{
		{gzipped(t, "alpha"), "alpha", false},
		{[]byte("not gzip at all"), "", true},
		{good[:len(good)/2], "", true},
		{good, long, false},
		{gzipped(t, "beta"), "beta", false},
	}
	var out bytes.Buffer
	for i, f := range frames {
		err := readFrameWith(&g, f.data, &out)
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
}

// TestGzipFramesReused checks that a frame costs no new reader: a fresh
// one allocates more than 40 KiB.
func TestGzipFramesReused(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	var g gzipFrames
	frame := gzipped(t, strings.Repeat("x", 4096))
	out := bytes.NewBuffer(make([]byte, 0, 8192))
	if err := readFrameWith(&g, frame, out); err != nil {
		t.Fatal(err)
	}
	const runs = 100
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if err := readFrameWith(&g, frame, out); err != nil || out.Len() != 4096 {
			t.Fatalf("%d bytes, %v", out.Len(), err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 4<<10 {
		t.Errorf("%d bytes allocated per frame; want at most 4 KiB (the reader is reused)", per)
	}
}
