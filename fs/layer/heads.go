package layer

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/lazysnap/lazysnap/fs/index"
)

// The first read of a file's first bytes is when a program is executed or
// a library loaded (the kernel and the dynamic loader read an ELF header
// first). WithHeadRead tells the layer's owner then, so that it can look
// in the head for what the program will open next (package fs reads the
// libraries a binary needs) and fetch it with FetchHead, side by side,
// before the dynamic loader asks for each in turn.

// WithHeadRead calls fn once per regular file of the layer, when the first
// read of the file's first byte is about to return or FetchHead fetched
// its first chunk, with the first bytes at hand (what the read read, at
// least the first headProbe bytes after FetchHead), which fn must not keep.
// fn must not block: the read waits for it. The default is nil: no call.
func WithHeadRead(fn func(l *Layer, id index.ID, head []byte)) Option {
	return func(o *options) { o.headRead = fn }
}

// fileSet is a set of the layer's files, one bit each, safe for
// concurrent use.
type fileSet struct{ bits []atomic.Uint64 }

func (h *fileSet) init(n int) { h.bits = make([]atomic.Uint64, (n+63)/64) }

// first reports whether id is added for the first time, and adds it.
func (h *fileSet) first(id index.ID) bool {
	w, b := &h.bits[id/64], uint64(1)<<(id%64)
	return w.Or(b)&b == 0
}

// has reports whether id was added.
func (h *fileSet) has(id index.ID) bool {
	return h.bits[id/64].Load()&(uint64(1)<<(id%64)) != 0
}

// headRead reports file id's head to WithHeadRead's function, once.
func (l *Layer) headRead(id index.ID, head []byte) {
	if l.opts.headRead == nil || !l.heads.first(id) {
		return
	}
	l.opts.headRead(l, id, head)
}

// headProbe is how many first bytes FetchHead passes to WithHeadRead's
// function: enough to tell a file's format by its magic number, and to
// hold an ELF file's program headers (glibc's loader reads 832 bytes for
// them).
const headProbe = 4096

// FetchHead fetches the first chunk of regular file id, as a read would
// but without a read-ahead tail (what is stored after a library is mostly
// other libraries no one asked for), and reports its head (WithHeadRead).
// It is for a file a program is about to open: the request starts at once,
// beside reads, and background work waits for it.
func (l *Layer) FetchHead(ctx context.Context, id index.ID) error {
	f, err := l.OpenFile(id)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.size == 0 {
		return nil
	}
	if missing := f.missing(ctx, 0, 1); len(missing) > 0 {
		p := l.readPlan()
		p.noTail = true
		if err := f.fetchMissing(ctx, 0, 1, missing, p); err != nil {
			return err
		}
		l.stats.headsFetched.Add(1)
	}
	if l.opts.headRead == nil {
		return nil
	}
	head := make([]byte, min(headProbe, f.size))
	if _, err := f.entry.ReadAt(head, 0); err != nil {
		return fmt.Errorf("reading the head of %s from the cache: %w", f.digest, err)
	}
	l.headRead(id, head)
	return nil
}
