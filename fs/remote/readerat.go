package remote

import (
	"context"
	"io"
)

// ReaderAt adapts b to io.ReaderAt: each ReadAt is one Fetch (with its
// retries), under ctx. It is safe for concurrent use, as io.ReaderAt must be.
func ReaderAt(ctx context.Context, b Blob) io.ReaderAt { return readerAt{ctx: ctx, b: b} }

// SectionReader returns the whole of b as an *io.SectionReader, which is
// what estargz.Open reads the footer and TOC through.
func SectionReader(ctx context.Context, b Blob) *io.SectionReader {
	return io.NewSectionReader(ReaderAt(ctx, b), 0, b.Size())
}

type readerAt struct {
	ctx context.Context
	b   Blob
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	size := r.b.Size()
	if off >= size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	rc, err := r.b.Fetch(r.ctx, off, n)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	got, err := io.ReadFull(rc, p[:n])
	if err != nil {
		return got, err
	}
	if n < int64(len(p)) {
		return got, io.EOF // io.ReaderAt: a short read says why
	}
	return got, nil
}
