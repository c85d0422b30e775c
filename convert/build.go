package convert

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// built is a converted layer blob in a temporary file.
type built struct {
	path        string
	digest      v1.Hash
	diffID      v1.Hash
	size        int64
	mediaType   types.MediaType
	annotations map[string]string
	prioritized int
	ranged      int
}

// buildLayer compresses the staged tar at tarPath into a new layer in dir,
// putting plan's entries first.
func (c *Converter) buildLayer(ctx context.Context, tarPath string, plan layerPlan, mediaType types.MediaType) (*built, error) {
	in, err := os.Open(tarPath)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	sr, err := withParents(in, plan.parents)
	if err != nil {
		return nil, err
	}
	opts := []estargz.Option{
		estargz.WithParallelism(c.opts.buildParts),
		estargz.WithChunkSize(c.opts.chunkSize),
		estargz.WithPrioritizedFiles(plan.names),
	}
	// Ending ctx when buildLayer returns stops the parallel diff_id of a
	// blob it stopped reading.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bc, zc := c.compression()
	bc.ctx = ctx
	blob, err := estargz.Build(sr, append(opts, estargz.WithContext(ctx), estargz.WithCompression(bc))...)
	if err != nil {
		return nil, err
	}
	defer blob.Close()
	out, err := os.CreateTemp(c.dir, "layer-*")
	if err != nil {
		return nil, err
	}
	b := &built{path: out.Name(), mediaType: mediaType, prioritized: len(plan.names)}
	h := sha256.New()
	wb := startWriteBehind(out, writeBehindBuffers, writeBehindSize)
	// A large buffer takes the blob from estargz's pipe in few hand-overs.
	b.size, err = io.CopyBuffer(io.MultiWriter(wb, h), blob, make([]byte, 1<<20))
	if werr := wb.Close(); err == nil {
		err = werr
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(b.path)
		return nil, fmt.Errorf("writing the new layer: %w", err)
	}
	b.digest = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
	if b.diffID, err = v1.NewHash(blob.DiffID().String()); err != nil {
		os.Remove(b.path)
		return nil, err
	}
	usize, err := blob.UncompressedSize()
	if err != nil {
		os.Remove(b.path)
		return nil, err
	}
	b.annotate(blob.TOCDigest().String(), usize, zc)
	return b, nil
}

// annotate sets the annotations of the new layer's descriptor.
func (b *built) annotate(tocDigest string, usize int64, zc *zstdCompression) {
	b.annotations = map[string]string{
		estargz.TOCJSONDigestAnnotation:         tocDigest,
		estargz.StoreUncompressedSizeAnnotation: strconv.FormatInt(usize, 10),
	}
	if zc != nil {
		for k, v := range zc.Metadata {
			b.annotations[k] = v
		}
	}
}

// compression returns the Compression of one layer's build (its ctx unset)
// and, for zstd:chunked, the compression whose Metadata has the layer's
// annotations once the TOC is written.
func (c *Converter) compression() (*buildCompression, *zstdCompression) {
	bc := &buildCompression{workers: c.opts.layerWorkers, minSpan: c.opts.minSpan}
	if c.opts.format == FormatZstdChunked {
		zc := newZstdCompression(c.level())
		bc.Compression, bc.newDecoder = zc, newZstdSpanDecoder
		return bc, zc
	}
	bc.Compression = newGzipCompression(c.level())
	bc.newDecoder = func() (spanDecoder, error) { return &gzipSpanDecoder{}, nil }
	return bc, nil
}

// level returns the compression level for the chosen format.
func (c *Converter) level() int {
	switch {
	case c.opts.level != 0:
		return c.opts.level
	case c.opts.format == FormatZstdChunked:
		return 3
	default:
		return gzip.DefaultCompression
	}
}

// withParents returns a reader over the staged tar preceded by extra
// directory entries. The staged tar is not rewritten: the extra entries are a
// tar stream without an end-of-archive marker, so the two read as one tar.
func withParents(f *os.File, parents []*tar.Header) (*io.SectionReader, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if len(parents) == 0 {
		return io.NewSectionReader(f, 0, st.Size()), nil
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range parents {
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("adding parent directory %q: %w", h.Name, err)
		}
	}
	if err := tw.Flush(); err != nil {
		return nil, err
	}
	prefix := buf.Bytes()
	return io.NewSectionReader(&concatReaderAt{prefix: prefix, rest: f}, 0, int64(len(prefix))+st.Size()), nil
}

// concatReaderAt reads prefix followed by rest.
type concatReaderAt struct {
	prefix []byte
	rest   io.ReaderAt
}

func (r *concatReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	if off < int64(len(r.prefix)) {
		n = copy(p, r.prefix[off:])
		if n == len(p) {
			return n, nil
		}
		off = int64(len(r.prefix))
	}
	m, err := r.rest.ReadAt(p[n:], off-int64(len(r.prefix)))
	return n + m, err
}
