package layer

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

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
	return l.FetchHeads(ctx, []index.ID{id})
}

// FetchHeads is FetchHead for files a program is about to open together (the
// libraries a binary needs): each file's first chunk and the rest of its
// chunk window, as a read of its head would fetch, with the heads stored
// next to each other in the blob in one request. A library's neighbours in
// its directory are often among the ones needed, and at the test registry
// a request costs about 5 ms of its CPU whatever its size, on cores the
// starting workload shares. The heads are reported once all are stored;
// a reader of one waits for its request (as it would for a read's) rather
// than sending its own.
func (l *Layer) FetchHeads(ctx context.Context, ids []index.ID) error {
	var files []*File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var errs []error
	var ts []target
	var sent []bool // per file: whether its head is in a request of ours
	for _, id := range ids {
		f, err := l.OpenFile(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		heads := l.headTargets(f)
		files, sent, ts = append(files, f), append(sent, len(heads) > 0), append(ts, heads...)
	}
	if len(ts) > 0 {
		errs = append(errs, l.fetchHeadTargets(ctx, ts))
	}
	for i, f := range files {
		errs = append(errs, l.reportHead(ctx, f, sent[i]))
	}
	return errors.Join(errs...)
}

// headTargets claims, as prefetch flights, the chunks of f a read of its
// head would fetch that are neither present nor being fetched: its first
// and the rest of its chunk window (withWindow).
func (l *Layer) headTargets(f *File) []target {
	var ts []target
	for i := 0; i < len(f.chunks) && (i == 0 || f.chunks[i].FileOffset < l.opts.chunkWindow); i++ {
		if t, ok := l.claimPrefetch(f, i); ok {
			ts = append(ts, t)
		}
	}
	return ts
}

// fetchHeadTargets fetches ts, neighbours in one request, all requests at
// once, as the foreground: background work waits for them.
func (l *Layer) fetchHeadTargets(ctx context.Context, ts []target) error {
	defer l.opts.sched.beginForeground()()
	ctx, cancel := context.WithTimeoutCause(ctx, l.opts.readTimeout, errReadTimeout)
	defer cancel()
	stop := context.AfterFunc(l.ctx, cancel)
	defer stop()
	runs := coalesce(ts, l.opts.maxRequestBytes, 0)
	var g errgroup.Group
	for _, run := range runs {
		g.Go(func() error { return l.fetchRun(ctx, run, classPrefetch) })
	}
	err := g.Wait()
	if errors.Is(context.Cause(ctx), errReadTimeout) {
		return l.deadlineError(err)
	}
	return err
}

// reportHead makes sure f's first chunk is present (fetching it as a read
// would, if a request that held it failed or was another's), counts it as
// fetched ahead if it was (fetched: FetchHeads sent a request for it), and
// reports f's head (WithHeadRead).
func (l *Layer) reportHead(ctx context.Context, f *File, fetched bool) error {
	if f.size == 0 {
		return nil
	}
	if missing := f.missing(ctx, 0, 1); len(missing) > 0 {
		p := l.readPlan()
		p.noTail = true
		if err := f.fetchMissing(ctx, 0, 1, missing, p); err != nil {
			return err
		}
		fetched = true
	}
	if fetched {
		l.stats.headsFetched.Add(1)
	}
	if l.opts.headRead == nil {
		return nil
	}
	head := make([]byte, min(headProbe, f.size))
	if _, err := f.entry.ReadAt(head, 0); err != nil {
		return fmt.Errorf("reading the head of %s from the cache: %w", f.digest, err)
	}
	l.headRead(f.id, head)
	return nil
}
