package layer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/lazysnap/lazysnap/internal/inflate"
)

// gzipFrames reuses gzip readers between the frames of a layer. eStargz
// compresses every file (every chunk of a large one) as a gzip member of its
// own, so fetching a layer decompresses one frame per file, and a new
// reader allocates a 32 KiB window, its Huffman tables and a 4 KiB read
// buffer: that was most of what fused allocated, and the garbage kept its
// heap far above the live data while layers were fetched.
//
// The readers are klauspost/compress's: on shared libraries compressed at
// gzip's best level it inflates about 25% faster than compress/gzip here
// (about 100 against 80 MB/s of compressed input on one core), and a fetch
// at 1 Gbit/s is bound by this decompression.
//
// Where the build has libdeflate, a gzip frame is instead read whole and
// decompressed in one call (readWholeFrame), about three times as fast
// (internal/inflate's BenchmarkGunzip); these readers then only take the
// frames it leaves (too large to hold, or not one member).
type gzipFrames struct {
	pool  sync.Pool
	whole inflate.Gunzipper
}

type gzipFrame struct {
	br *bufio.Reader
	zr gzip.Reader
}

// open returns a reader of the gzip stream in frame, and a function that
// releases it; the reader must not be used after.
func (g *gzipFrames) open(frame io.Reader) (io.Reader, func(), error) {
	f, _ := g.pool.Get().(*gzipFrame)
	if f == nil {
		f = &gzipFrame{br: bufio.NewReader(frame)}
	} else {
		f.br.Reset(frame)
	}
	release := func() {
		f.br.Reset(nil) // keeps no reference to the response body
		g.pool.Put(f)
	}
	// Reset starts over whatever state a failed frame left.
	if err := f.zr.Reset(f.br); err != nil {
		release()
		return nil, nil, err
	}
	return &f.zr, release, nil
}

// zstdFrames reuses zstd decoders between the frames of a zstd:chunked
// layer, as gzipFrames does gzip readers. estargz's
// zstdchunked.Decompressor.Reader makes a new zstd.Decoder per frame with the
// package's defaults: a decoding goroutine per core and buffers sized for
// a long stream, started and dropped for every file fetched. That made
// zstd:chunked layers start slower than gzip ones at 1 Gbit/s (python +
// numpy 1.20 s against 0.94 s), though zstd decodes several times faster.
// One decoder per frame at a time, decoding in the caller's goroutine
// (concurrency 1), is what a frame of one file or chunk needs.
type zstdFrames struct{ pool sync.Pool }

// zstdMaxWindow bounds the window a frame may ask the decoder to keep
// (zstd's own default allows 512 MiB). A decoder allocates its window when
// it decodes a frame's first block and keeps it while pooled, so a layer
// whose frames each asked for a huge one would hold that much per request
// in flight. Producers of zstd:chunked ask for at most 8 MiB (klauspost's
// encoder at any level, and the zstd tool up to level 19); 32 MiB leaves
// room for more without letting a hostile layer make fused hold gigabytes.
const zstdMaxWindow = 32 << 20

// open returns a reader of the zstd frame in frame, and a function that
// releases it; the reader must not be used after.
func (z *zstdFrames) open(frame io.Reader) (io.Reader, func(), error) {
	d, _ := z.pool.Get().(*zstd.Decoder)
	if d == nil {
		var err error
		d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, nil, err
		}
	}
	release := func() {
		_ = d.Reset(nil) // keeps no reference to the response body; never fails for nil
		z.pool.Put(d)
	}
	if err := d.Reset(frame); err != nil {
		release()
		return nil, nil, err
	}
	return d, release, nil
}

// maxWholeFrame bounds the compressed and the decompressed size of a frame
// read whole: its buffers come from chunkBufs, whose largest class this is.
// lazyconv's frames are a file or a chunk of at most 1 MiB (estargz's
// default chunk is 4 MiB); a larger one is streamed.
const maxWholeFrame = 1 << maxPoolClass

// wholeFrames says whether the layer's frames are read whole
// (readWholeFrame): gzip ones, in a build with libdeflate.
func (l *Layer) wholeFrames() bool {
	if !inflate.Available {
		return false
	}
	switch l.toc.decompressor.(type) {
	case *estargz.GzipDecompressor, *estargz.LegacyGzipDecompressor:
		return true
	}
	return false
}

// readWholeFrame is readFrame for a gzip frame of size bytes: it receives
// the whole frame, decompresses it with one libdeflate call into a buffer
// of the size the member's trailer gives (libdeflate checks it and the
// CRC-32), and stores each chunk from there. Receiving the frame before
// decompressing any of it costs less than it saves: a frame of a 1 MiB
// chunk takes about a millisecond to decompress this way. A frame it does
// not take (its trailer claims more than maxWholeFrame, it holds more than
// one member) goes to the streaming reader from the bytes received.
func (l *Layer) readWholeFrame(frame io.Reader, size int64, ts []target, complete func()) error {
	src := l.bufs.get(size)
	defer l.bufs.put(src)
	if _, err := io.ReadFull(frame, src); err != nil {
		return err // the caller tells a broken transport from a short body
	}
	n, ok := inflate.TrailerSize(src)
	if !ok || n > maxWholeFrame {
		return l.readFrameStream(bytes.NewReader(src), ts, complete)
	}
	dst := l.bufs.get(n)
	defer l.bufs.put(dst) // the cache copies what it writes
	got, err := l.frames.whole.Gunzip(dst, src)
	switch {
	case errors.Is(err, inflate.ErrCorrupt):
		return fmt.Errorf("%w: %v", errBadChunk, err)
	case err != nil:
		return l.readFrameStream(bytes.NewReader(src), ts, complete)
	}
	return l.storeChunks(bytes.NewReader(dst[:got]), ts, complete)
}
