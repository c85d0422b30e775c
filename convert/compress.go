package convert

import (
	"io"
	"sync"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// gzipCompression is estargz's gzip format written with klauspost/compress,
// which is several times faster than compress/gzip at the same level. estargz
// opens a new gzip member for every chunk, so writers are pooled: a deflate
// state is large and allocating one per small file dominates otherwise.
// The TOC and footer are still written by estargz itself.
type gzipCompression struct {
	*estargz.GzipCompressor
	*estargz.GzipDecompressor
	level int
	pool  sync.Pool
}

func newGzipCompression(level int) *gzipCompression {
	return &gzipCompression{
		GzipCompressor:   estargz.NewGzipCompressorWithLevel(level),
		GzipDecompressor: &estargz.GzipDecompressor{},
		level:            level,
	}
}

func (c *gzipCompression) Writer(w io.Writer) (estargz.WriteFlushCloser, error) {
	if zw, ok := c.pool.Get().(*gzip.Writer); ok {
		zw.Reset(w)
		return &pooledGzip{zw, c}, nil
	}
	zw, err := gzip.NewWriterLevel(w, c.level)
	if err != nil {
		return nil, err
	}
	return &pooledGzip{zw, c}, nil
}

// Reader decompresses with klauspost/compress too: estargz uses it to compute
// the new layer's diff_id.
func (c *gzipCompression) Reader(r io.Reader) (io.ReadCloser, error) {
	return gzip.NewReader(r)
}

type pooledGzip struct {
	*gzip.Writer
	c *gzipCompression
}

func (w *pooledGzip) Close() error {
	if err := w.Writer.Close(); err != nil {
		return err
	}
	w.c.pool.Put(w.Writer)
	return nil
}

// zstdCompression is zstd:chunked; its Metadata receives the annotations
// zstd:chunked readers need once the TOC is written.
type zstdCompression struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

func newZstdCompression(level int) *zstdCompression {
	return &zstdCompression{
		Compressor: &zstdchunked.Compressor{
			CompressionLevel: zstd.EncoderLevelFromZstd(level),
			Metadata:         make(map[string]string),
		},
		Decompressor: &zstdchunked.Decompressor{},
	}
}
