package fs_test

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

const benchFileSize = 64 << 20

// benchSetup pushes a layer with one 64 MiB file and writes the same file
// to local disk.
func benchSetup(b *testing.B) (*testenv.Registry, *builtLayer, string) {
	testenv.RequireFUSE(b)
	reg := testenv.StartRegistry(b)
	file := reg0("data", benchFileSize, 31)
	l := buildLayer(b, []tentry{file})
	push(b, reg.Host, "bench/app:v1", l)
	local := filepath.Join(b.TempDir(), "data")
	out, err := os.Create(local)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, file.content()); err != nil {
		b.Fatal(err)
	}
	out.Close()
	return reg, l, local
}

// BenchmarkReadCached reads a fully cached file through the FUSE mount and
// the same file on local disk, sequentially (128 KiB reads, fresh open per
// pass) and at random 4 KiB offsets. Compare the MB/s of the sub-benchmarks.
func BenchmarkReadCached(b *testing.B) {
	reg, l, local := benchSetup(b)
	f := newFS(b)
	mp := mount(b, f, reg.Host+"/bench/app:v1", l)
	lazy := filepath.Join(mp, "data")
	// Read everything once: the cache holds it all, later opens may use
	// passthrough.
	if _, err := os.ReadFile(lazy); err != nil {
		b.Fatal(err)
	}
	// The same through a mount that never uses passthrough, for comparison.
	plain := filepath.Join(mount(b, newFS(b, lfs.WithPassthrough(false)), reg.Host+"/bench/app:v1", l), "data")
	if _, err := os.ReadFile(plain); err != nil {
		b.Fatal(err)
	}
	for _, src := range []struct{ name, path string }{{"lazysnap", lazy}, {"lazysnap-nopassthrough", plain}, {"local", local}} {
		b.Run("sequential/"+src.name, func(b *testing.B) {
			buf := make([]byte, 128<<10)
			b.SetBytes(benchFileSize)
			for b.Loop() {
				fh, err := os.Open(src.path)
				if err != nil {
					b.Fatal(err)
				}
				for {
					_, err := fh.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				fh.Close()
			}
		})
		b.Run("random/"+src.name, func(b *testing.B) {
			fh, err := os.Open(src.path)
			if err != nil {
				b.Fatal(err)
			}
			defer fh.Close()
			rng := rand.New(rand.NewPCG(1, 2))
			buf := make([]byte, 4096)
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := fh.ReadAt(buf, rng.Int64N(benchFileSize/4096)*4096); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkColdRead reads the whole file from a fresh cache through a link
// limited to 200 Mbit/s, and straight from the registry, where the CPU
// fused spends per byte (decompressing, hashing, storing) is what counts.
func BenchmarkColdRead(b *testing.B) {
	reg, l, _ := benchSetup(b)
	for _, link := range []struct{ name, host string }{
		{"link=200Mbit", startThrottle(b, reg.Host, 25<<20)},
		{"link=local", reg.Host},
	} {
		b.Run(link.name, func(b *testing.B) { coldRead(b, link.host, l) })
	}
}

func coldRead(b *testing.B, host string, l *builtLayer) {
	b.SetBytes(benchFileSize)
	for b.Loop() {
		b.StopTimer()
		f, err := lfs.New(lfs.WithCacheDir(b.TempDir()), lfs.WithResolver(testResolver()))
		if err != nil {
			b.Fatal(err)
		}
		mp := b.TempDir()
		if err := f.Mount(context.Background(), mp, labels(host+"/bench/app:v1", l)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := os.ReadFile(filepath.Join(mp, "data")); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		f.Close()
		b.StartTimer()
	}
}

// startThrottle proxies to target at most bytesPerSec of response bodies.
func startThrottle(b *testing.B, target string, bytesPerSec int64) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rp.ServeHTTP(&throttledWriter{ResponseWriter: w, rate: bytesPerSec, start: time.Now()}, r)
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

type throttledWriter struct {
	http.ResponseWriter
	rate  int64
	start time.Time
	sent  int64
}

func (w *throttledWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.sent += int64(n)
	due := w.start.Add(time.Duration(w.sent * int64(time.Second) / w.rate))
	time.Sleep(time.Until(due))
	return n, err
}

func (w *throttledWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
