package convert

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// buildCompression is the Compression of one estargz.Build. estargz computes
// the new layer's diff_id by decompressing the whole blob with Reader on one
// core, after the parallel compression: about a sixth of a conversion on one
// core. Every chunk of an eStargz blob starts a new gzip member
// (or zstd frame) at the offset its TOC entry records, so once estargz has
// handed the TOC to WriteTOCAndFooter, Reader knows where the blob can be cut
// and decodes the pieces on several cores, returning their bytes in order.
// The bytes are the same as a sequential decoding's: every piece must decode
// to its end as whole members, or the reader fails.
type buildCompression struct {
	estargz.Compression
	// ctx ends the decoding early: estargz's goroutine that computes the
	// diff_id would otherwise wait for a reader of the blob that gave up.
	ctx        context.Context
	workers    int
	minSpan    int64
	newDecoder func() (spanDecoder, error)
	// bounds are the member starts in the blob, set by WriteTOCAndFooter,
	// which estargz calls before it starts reading the blob.
	bounds []int64
}

func (c *buildCompression) WriteTOCAndFooter(w io.Writer, off int64, toc *estargz.JTOC, diffHash hash.Hash) (digest.Digest, error) {
	c.bounds = memberStarts(toc, off, c.minSpan)
	return c.Compression.WriteTOCAndFooter(w, off, toc, diffHash)
}

func (c *buildCompression) Reader(r io.Reader) (io.ReadCloser, error) {
	if c.bounds == nil {
		return c.Compression.Reader(r)
	}
	return c.newSpanReader(r), nil
}

// memberStarts returns, in order, offsets where a member starts: 0, the
// chunks' offsets and the TOC's, merged so that pieces are at least minSpan
// long where the members allow.
func memberStarts(toc *estargz.JTOC, tocOffset, minSpan int64) []int64 {
	var offs []int64
	for _, e := range toc.Entries {
		if ((e.Type == "reg" && e.Size > 0) || e.Type == "chunk") && e.InnerOffset == 0 {
			offs = append(offs, e.Offset)
		}
	}
	offs = append(offs, tocOffset)
	slices.Sort(offs)
	minSpan = max(minSpan, 1) // a piece is never empty
	bounds := []int64{0}
	for _, o := range offs {
		if o-bounds[len(bounds)-1] >= minSpan {
			bounds = append(bounds, o)
		}
	}
	return bounds
}

// spanDecoder decodes a run of whole members.
type spanDecoder interface {
	decode(dst *bytes.Buffer, src []byte) error
	close()
}

type gzipSpanDecoder struct{ zr *gzip.Reader }

func (d *gzipSpanDecoder) decode(dst *bytes.Buffer, src []byte) error {
	if d.zr == nil {
		zr, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return err
		}
		d.zr = zr
	} else if err := d.zr.Reset(bytes.NewReader(src)); err != nil {
		return err
	}
	_, err := io.Copy(dst, d.zr)
	return err
}

func (d *gzipSpanDecoder) close() {}

type zstdSpanDecoder struct{ zd *zstd.Decoder }

func newZstdSpanDecoder() (spanDecoder, error) {
	// One goroutine per decoder: the parallelism comes from the spans.
	zd, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &zstdSpanDecoder{zd: zd}, nil
}

func (d *zstdSpanDecoder) decode(dst *bytes.Buffer, src []byte) error {
	if err := d.zd.Reset(bytes.NewReader(src)); err != nil {
		return err
	}
	_, err := io.Copy(dst, d.zd)
	return err
}

func (d *zstdSpanDecoder) close() { d.zd.Close() }

// span is one piece of the blob and, once decoded, its bytes.
type span struct {
	off  int64
	src  []byte
	out  *bytes.Buffer
	err  error
	done chan struct{}
}

// spanReader reads a blob from r in pieces cut at member starts, decodes up
// to workers pieces at once and returns the decoded bytes in blob order.
type spanReader struct {
	ordered chan *span // pieces in blob order, at most workers ahead
	jobs    chan *span
	ctx     context.Context
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	cur     *span
	err     error
	// srcs and outs recycle the pieces' buffers: a layer is made of
	// thousands of them.
	srcs, outs sync.Pool
}

func (c *buildCompression) newSpanReader(r io.Reader) *spanReader {
	workers := max(c.workers, 1)
	s := &spanReader{
		ordered: make(chan *span, workers),
		jobs:    make(chan *span),
		ctx:     c.ctx,
		stop:    make(chan struct{}),
	}
	s.wg.Add(1 + workers)
	go s.cut(r, c.bounds)
	for range workers {
		go s.decode(c.newDecoder)
	}
	return s
}

// cut reads r piece by piece; the last piece runs to the end of r.
func (s *spanReader) cut(r io.Reader, bounds []int64) {
	defer s.wg.Done()
	defer close(s.ordered)
	defer close(s.jobs)
	for i, off := range bounds {
		sp := &span{off: off, done: make(chan struct{})}
		if i+1 < len(bounds) {
			sp.src = s.srcBuf(int(bounds[i+1] - off))
			_, sp.err = io.ReadFull(r, sp.src)
		} else {
			sp.src, sp.err = io.ReadAll(r)
		}
		select {
		case s.ordered <- sp:
		case <-s.stop:
			return
		case <-s.ctx.Done():
			return
		}
		if sp.err != nil {
			close(sp.done)
			return
		}
		select {
		case s.jobs <- sp:
		case <-s.stop:
			return
		case <-s.ctx.Done():
			return
		}
	}
}

func (s *spanReader) decode(newDecoder func() (spanDecoder, error)) {
	defer s.wg.Done()
	var d spanDecoder
	defer func() {
		if d != nil {
			d.close()
		}
	}()
	for sp := range s.jobs {
		sp.out = s.outBuf()
		var err error
		if d == nil {
			d, err = newDecoder()
		}
		if err == nil {
			err = d.decode(sp.out, sp.src)
		}
		if err != nil {
			sp.err = fmt.Errorf("decompressing the new layer at offset %d: %w: %w", sp.off, err, errdefs.ErrDataLoss)
		}
		if src := sp.src; cap(src) <= maxPooled {
			s.srcs.Put(&src)
		}
		sp.src = nil
		close(sp.done)
	}
}

// maxPooled bounds the buffers kept for reuse, so that an odd huge member
// does not stay in memory.
const maxPooled = 16 << 20

func (s *spanReader) srcBuf(n int) []byte {
	if b, ok := s.srcs.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:n]
	}
	return make([]byte, n)
}

func (s *spanReader) outBuf() *bytes.Buffer {
	if b, ok := s.outs.Get().(*bytes.Buffer); ok {
		b.Reset()
		return b
	}
	return new(bytes.Buffer)
}

// release recycles the current piece's output once it has been handed on.
func (s *spanReader) release() {
	if s.cur != nil && s.cur.out.Cap() <= maxPooled {
		s.outs.Put(s.cur.out)
	}
	s.cur = nil
}

// next makes the next decoded piece current; it returns io.EOF after the last.
func (s *spanReader) next() error {
	if s.err != nil {
		return s.err
	}
	var sp *span
	ok := false
	select {
	case sp, ok = <-s.ordered:
	case <-s.ctx.Done():
		s.err = s.ctx.Err()
		return s.err
	}
	if !ok {
		s.err = io.EOF
		return s.err
	}
	select {
	case <-sp.done:
	case <-s.ctx.Done():
		s.err = s.ctx.Err()
		return s.err
	}
	if sp.err != nil {
		s.err = sp.err
		return s.err
	}
	s.cur = sp
	return nil
}

func (s *spanReader) Read(p []byte) (int, error) {
	for s.cur == nil || s.cur.out.Len() == 0 {
		s.release()
		if err := s.next(); err != nil {
			return 0, err
		}
	}
	return s.cur.out.Read(p)
}

// WriteTo saves a copy of every decoded byte when estargz hashes them.
func (s *spanReader) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		if s.cur != nil {
			m, err := s.cur.out.WriteTo(w)
			n += m
			if err != nil {
				return n, err
			}
			s.release()
		}
		if err := s.next(); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
}

// Close stops the reading and decoding and waits for them. A cut blocked
// in reading r ends when r fails, as estargz's does once the blob's reader
// is closed.
func (s *spanReader) Close() error {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
	return nil
}
