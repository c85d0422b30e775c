package layer

import (
	"bytes"
	"io"
	"slices"

	"github.com/klauspost/compress/gzip"

	"github.com/lazysnap/lazysnap/internal/inflate"
)

// The diff_id stream decompressed member by member with libdeflate. The
// stream reads the whole blob, one gzip member after another, and with
// klauspost's streaming reader that took a core for about 4 s per 400 MB
// at the background fetch's pace, cores a starting workload could use.
// The TOC says where frames start and end (each chunk's frame is one
// member; between two frames lie the tar headers of directories, links
// and empty files, a member each), so the stream is cut there and each
// piece decompressed member by member in memory (BenchmarkStreamMembers).

// memberReader returns the decompressed stream of r, the blob from its
// start, cut into pieces at bounds (sorted blob offsets where the TOC says
// a member starts). From the first member libdeflate does not take (a TOC
// that lies about where members start, a piece over maxWholeFrame, a
// corrupt member) the rest of the blob goes to klauspost's multistream
// reader: every member before it was decompressed whole, so that is where
// a member starts, and the result is the same bytes (or the same error) as
// streaming the whole blob.
func (l *Layer) memberReader(r io.Reader, bounds []int64) io.Reader {
	return &members{r: r, bounds: bounds, gz: &l.frames.whole}
}

type members struct {
	r      io.Reader
	bounds []int64 // piece starts after pos, ascending
	pos    int64   // blob offset of the next piece
	gz     *inflate.Gunzipper

	src, dst []byte    // the current piece, compressed and decompressed
	scratch  []byte    // one member, decompressed
	out      []byte    // what of dst is not read yet
	stream   io.Reader // set once pieces are streamed instead
}

func (m *members) Read(p []byte) (int, error) {
	for len(m.out) == 0 {
		if m.stream != nil {
			return m.stream.Read(p)
		}
		if err := m.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, m.out)
	m.out = m.out[n:]
	return n, nil
}

// next decompresses the next piece into m.out, member by member (the tar
// headers of directories and empty files between two frames are members
// of their own), or hands over to the streaming reader from the first
// member it cannot take, after what it decompressed.
func (m *members) next() error {
	for len(m.bounds) > 0 && m.bounds[0] <= m.pos {
		m.bounds = m.bounds[1:]
	}
	if len(m.bounds) == 0 {
		return m.toStream(nil) // the last piece: the TOC's member and the footer
	}
	size := m.bounds[0] - m.pos
	if size > maxWholeFrame {
		return m.toStream(nil)
	}
	m.src = grow(m.src, size)
	if n, err := io.ReadFull(m.r, m.src); err != nil {
		return m.toStream(m.src[:n]) // the stream reports the short blob
	}
	m.dst, m.pos = m.dst[:0], m.bounds[0]
	for rest := m.src; len(rest) > 0; {
		out, in, err := m.member(rest)
		if err != nil {
			m.out = m.dst
			return m.toStream(rest)
		}
		m.dst = append(m.dst, out...)
		rest = rest[in:]
	}
	m.out = m.dst
	return nil
}

// member decompresses the first member of src into scratch space. Its
// size is the trailer's when src is one member; a header-only member
// before others fits in minMemberBuf, and a larger one is streamed.
func (m *members) member(src []byte) (out []byte, in int, err error) {
	n, ok := inflate.TrailerSize(src)
	if !ok || n > maxWholeFrame {
		return nil, 0, inflate.ErrShortBuffer
	}
	m.scratch = grow(m.scratch, max(n, minMemberBuf))
	got, in, err := m.gz.GunzipFirst(m.scratch, src)
	if err != nil {
		return nil, 0, err
	}
	return m.scratch[:got], in, nil
}

// minMemberBuf holds a member of tar headers only: a few 512-byte blocks,
// more with long names or extended attributes.
const minMemberBuf = 64 << 10

// toStream streams read (the bytes of the current piece already read)
// and the rest of the blob.
func (m *members) toStream(read []byte) error {
	zr, err := gzip.NewReader(io.MultiReader(bytes.NewReader(slices.Clone(read)), m.r))
	if err == io.EOF && m.pos > 0 {
		m.stream = bytes.NewReader(nil) // the blob ended with a whole member
		return nil
	}
	if err != nil {
		return err
	}
	m.stream = zr
	return nil
}

// memberBounds returns the blob offsets where the layer's TOC says a gzip
// member starts: each chunk frame's start and end, sorted.
func (l *Layer) memberBounds() []int64 {
	var b []int64
	for id := range l.idx.RegularFiles() {
		for _, c := range l.idx.Chunks(id) {
			b = append(b, c.BlobOffset, c.BlobEnd)
		}
	}
	slices.Sort(b)
	return slices.Compact(b)
}
