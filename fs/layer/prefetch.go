package layer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/lazysnap/lazysnap/fs/index"
)

// Prefetch fetches every chunk stored before the layer's prefetch landmark
// (the files the image wants first) with as few large requests as possible.
// A layer without a landmark, or with the "no prefetch" landmark, has
// nothing to prefetch.
func (l *Layer) Prefetch(ctx context.Context) error {
	end := l.idx.PrefetchEnd()
	if end > 0 {
		err := l.fetchWhere(ctx, func(c index.Chunk) bool { return c.BlobOffset < end })
		if err != nil {
			return fmt.Errorf("prefetching layer %s: %w", l.Digest(), err)
		}
	}
	l.stats.prefetchDone.Store(true)
	return nil
}

// FetchAll fetches every chunk of the layer the cache lacks, in blob order,
// for a layer that should become fully local in the background.
func (l *Layer) FetchAll(ctx context.Context) error {
	if err := l.fetchWhere(ctx, func(index.Chunk) bool { return true }); err != nil {
		return fmt.Errorf("fetching all of layer %s: %w", l.Digest(), err)
	}
	l.stats.fetchAllDone.Store(true)
	return nil
}

// chunkRef names a chunk of the layer.
type chunkRef struct {
	id index.ID
	i  int
}

// fetchWhere fetches the chunks that want selects, in blob order, one
// window at a time so that only the files of a window hold open cache
// entries.
func (l *Layer) fetchWhere(ctx context.Context, want func(index.Chunk) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.ctx, cancel)
	defer stop()

	var refs []chunkRef
	for id := range l.idx.RegularFiles() {
		for i, c := range l.idx.Chunks(id) {
			if want(c) {
				refs = append(refs, chunkRef{id, i})
			}
		}
	}
	blobOrder := func(a, b chunkRef) int {
		ca, cb := l.idx.Chunks(a.id)[a.i], l.idx.Chunks(b.id)[b.i]
		return cmp.Or(cmp.Compare(ca.BlobOffset, cb.BlobOffset), cmp.Compare(ca.InnerOffset, cb.InnerOffset))
	}
	slices.SortFunc(refs, blobOrder)
	window := l.opts.maxPrefetchBytes * int64(l.opts.concurrency)
	for len(refs) > 0 {
		n := 1
		start := l.idx.Chunks(refs[0].id)[refs[0].i].BlobOffset
		for n < len(refs) && l.idx.Chunks(refs[n].id)[refs[n].i].BlobEnd-start <= window {
			n++
		}
		if err := l.fetchWindow(ctx, refs[:n]); err != nil {
			return err
		}
		refs = refs[n:]
	}
	return nil
}

// fetchWindow opens the files of refs and fetches their missing chunks.
func (l *Layer) fetchWindow(ctx context.Context, refs []chunkRef) (err error) {
	files := map[index.ID]*File{}
	defer func() {
		for _, f := range files {
			err = errors.Join(err, f.Close())
		}
	}()
	var ts []target
	for _, r := range refs {
		f, ok := files[r.id]
		if !ok {
			if f, err = l.OpenFile(r.id); err != nil {
				return err
			}
			files[r.id] = f
		}
		c := f.chunks[r.i]
		if f.entry.Has(c.FileOffset, c.Size) {
			l.present.mark(r.id, r.i, c.Size)
			continue
		}
		ts = append(ts, target{f: f, i: r.i})
	}
	return l.fetchTargets(ctx, ts, l.opts.maxPrefetchBytes)
}
