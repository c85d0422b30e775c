package elfdeps

import (
	"errors"
	"io"
)

// blockReader serves the parser's many small reads (a program header, a
// dynamic entry, a name) from aligned blocks read once each: each read of
// a layer's file costs a cache lookup, and a binary's dynamic section has
// dozens of entries.
type blockReader struct {
	r      io.ReaderAt
	blocks map[int64]block
}

// block is one aligned block; err says why data is shorter than
// blockSize (io.EOF at the end of the file).
type block struct {
	data []byte
	err  error
}

const (
	blockSize = 64 << 10
	maxBlocks = 64 // kept at most (4 MiB); further blocks are read again when asked for
)

func newBlockReader(r io.ReaderAt) *blockReader {
	return &blockReader{r: r, blocks: map[int64]block{}}
}

func (b *blockReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for n < len(p) {
		at := off + int64(n)
		blk := b.block(at / blockSize)
		if in := int(at % blockSize); in < len(blk.data) {
			n += copy(p[n:], blk.data[in:])
		}
		if n < len(p) && len(blk.data) < blockSize {
			return n, blk.err
		}
	}
	return n, nil
}

func (b *blockReader) block(i int64) block {
	if blk, ok := b.blocks[i]; ok {
		return blk
	}
	buf := make([]byte, blockSize)
	n, err := b.r.ReadAt(buf, i*blockSize)
	blk := block{data: buf[:n]}
	if n < blockSize {
		blk.err = err
		if err == nil {
			blk.err = io.ErrUnexpectedEOF
		}
	}
	if (n == blockSize || errors.Is(err, io.EOF)) && len(b.blocks) < maxBlocks {
		b.blocks[i] = blk // a transient error is not kept
	}
	return blk
}
