package convert

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// benchTotalMB and benchLayers size the benchmark image: one layer of 1 GiB,
// the common shape of an image whose weight sits in one layer, unless
// LAZYCONV_BENCH_MB sets the total and LAZYCONV_BENCH_LAYERS the layer count.
func benchTotalMB() int { return envInt("LAZYCONV_BENCH_MB", 1024) }

func benchLayers() int { return envInt("LAZYCONV_BENCH_LAYERS", 1) }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkConvert converts a generated multi-layer image (half
// incompressible, half text-like files from 4 KiB to 8 MiB) and reports
// MB/s of uncompressed input and the process's peak RSS during the run.
// Run with -cpu 1,2 to compare one core with two.
func BenchmarkConvert(b *testing.B) {
	dir := b.TempDir()
	img, size := benchImage(b, dir, benchTotalMB())
	b.SetBytes(size)
	resetPeakRSS()
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		c, err := New(benchOptions(dir)...)
		if err != nil {
			b.Fatal(err)
		}
		out, err := c.Image(context.Background(), img)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := out.Digest(); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.StopTimer()
	// CPU time per op next to ns/op shows how parallel the work was even on
	// a machine other processes keep busy.
	b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
	if mb, err := peakRSSMB(); err == nil {
		b.ReportMetric(mb, "peak-RSS-MB")
	}
}

// benchOptions are the converter's defaults, but for a compression level
// LAZYCONV_BENCH_LEVEL may set.
func benchOptions(dir string) []Option {
	opts := []Option{WithWorkDir(dir)}
	if v, err := strconv.Atoi(os.Getenv("LAZYCONV_BENCH_LEVEL")); err == nil {
		opts = append(opts, WithCompressionLevel(v))
	}
	return opts
}

// benchImage writes benchLayers() gzip layers totalling about totalMB of
// uncompressed files into dir.
func benchImage(b *testing.B, dir string, totalMB int) (v1.Image, int64) {
	b.Helper()
	var layers []v1.Layer
	var total int64
	for i := range benchLayers() {
		l, n, err := writeBenchLayer(filepath.Join(dir, fmt.Sprintf("layer%d.tar.gz", i)), uint64(i), int64(totalMB)<<20/int64(benchLayers()))
		if err != nil {
			b.Fatal(err)
		}
		layers, total = append(layers, l), total+n
	}
	img := imageOf(b, layers...)
	// The source's manifest needs its layers' digests; a registry serves it
	// ready, so hashing the source blobs is no part of the conversion.
	if _, err := img.Manifest(); err != nil {
		b.Fatal(err)
	}
	return img, total
}

func writeBenchLayer(path string, seed uint64, size int64) (v1.Layer, int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return nil, 0, err
	}
	diff := sha256.New()
	counted := &countWriter{w: io.MultiWriter(zw, diff)}
	tw := tar.NewWriter(counted)
	r := rand.New(rand.NewPCG(seed, 42))
	words := strings.Fields("lazy snapshot layer chunk fetch range registry container image file read cache verify digest")
	for i := 0; counted.n < size; i++ {
		n := int64(4<<10) << r.IntN(12) // 4 KiB .. 8 MiB
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d%d/f%d", i%32, i), Mode: 0o644, Size: n, ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, 0, err
		}
		src := io.Reader(&randReader{r: r})
		if i%2 == 1 {
			src = &textReader{r: r, words: words}
		}
		if _, err := io.CopyN(tw, bufio.NewReader(src), n); err != nil {
			return nil, 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, 0, err
	}
	if err := zw.Close(); err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	diffID := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diff.Sum(nil))}
	return &fileBlobLayer{path: path, size: st.Size(), diffID: diffID}, counted.n, f.Sync()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type randReader struct{ r *rand.Rand }

func (rr *randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(rr.r.Uint32())
	}
	return len(p), nil
}

type textReader struct {
	r     *rand.Rand
	words []string
}

func (tr *textReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		n += copy(p[n:], tr.words[tr.r.IntN(len(tr.words))]+" ")
	}
	return n, nil
}

// fileBlobLayer is a gzip layer in a file.
type fileBlobLayer struct {
	path   string
	size   int64
	diffID v1.Hash
}

func (l *fileBlobLayer) Digest() (v1.Hash, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return v1.Hash{}, err
	}
	defer f.Close()
	h, _, err := v1.SHA256(f)
	return h, err
}
func (l *fileBlobLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileBlobLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileBlobLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *fileBlobLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *fileBlobLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("not implemented")
}

// cpuTime returns the user and system CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS resets the kernel's peak RSS (VmHWM) of this process.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSSMB reads VmHWM from /proc/self/status, in MB.
func peakRSSMB() (float64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM")
}
