package layer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// Prefetch fetches every chunk stored before the layer's prefetch landmark
// (the files the image wants first) with as few large requests as
// possible: one per WithMaxPrefetchBytes of the region, reading through
// tar headers and small cached gaps, each stream decompressed once. It
// counts as foreground work, so background fetches of every layer sharing
// the scheduler wait for it; reads do not (see worthWaiting). A layer
// without a landmark, or with the "no prefetch" landmark, has nothing to
// prefetch.
func (l *Layer) Prefetch(ctx context.Context) error {
	if err := l.prefetchRegion(ctx); err != nil {
		return err
	}
	markDone(&l.stats.prefetchDoneAt)
	return nil
}

// PrefetchFiles fetches, as Prefetch does (few large requests, as
// foreground work), the files at paths that this layer holds: the start-up
// order this node recorded for the image (fs/trace), or one from the
// registry, for a layer with no prioritized region of its own. The
// requests are those blob order makes, sent in the order of paths (by the
// first file each brings): a list recorded from a start-up names files in
// the order they were first opened, and in an image converted without it
// they lie anywhere in the layer. paths are image paths ("/usr/bin/python3");
// those the layer lacks, and all but regular files, are skipped. A file
// with ranges (the byte ranges of it the workload read, keyed by its path)
// is fetched only in the chunks that overlap them (ranges past its end
// select nothing); the background fetch brings the rest later. Files
// without ranges are fetched whole.
func (l *Layer) PrefetchFiles(ctx context.Context, paths []string, ranges map[string][]prefetchlist.Range) error {
	if err := l.prefetchFiles(ctx, paths, ranges); err != nil {
		return err
	}
	markDone(&l.stats.prefetchDoneAt)
	return nil
}

// PrefetchRegionAndFiles runs Prefetch and PrefetchFiles at once, for a
// layer whose image put some start-up files before its landmark and named
// others with their ranges (large files start-up reads only parts of,
// left in place by the converter). Neither waits for the other: both are
// what start-up reads, and a failure of one does not stop the other. The
// prefetch counts as done when both are.
func (l *Layer) PrefetchRegionAndFiles(ctx context.Context, paths []string, ranges map[string][]prefetchlist.Range) error {
	var wg sync.WaitGroup
	var regionErr error
	wg.Go(func() { regionErr = l.prefetchRegion(ctx) })
	filesErr := l.prefetchFiles(ctx, paths, ranges)
	wg.Wait()
	if err := errors.Join(regionErr, filesErr); err != nil {
		return err
	}
	markDone(&l.stats.prefetchDoneAt)
	return nil
}

func (l *Layer) prefetchRegion(ctx context.Context) error {
	defer l.opts.sched.beginForeground()()
	end := l.idx.PrefetchEnd()
	if end == 0 {
		return nil
	}
	defer l.prefetchingList()()
	p := plan{class: classPrefetch, maxBytes: l.opts.maxPrefetchBytes, maxGap: l.opts.maxGapBytes,
		concurrency: l.opts.concurrency}
	if err := l.fetchWhere(ctx, p, func(_ index.ID, c index.Chunk) bool { return c.BlobOffset < end }); err != nil {
		return fmt.Errorf("prefetching layer %s: %w", l.Digest(), err)
	}
	return nil
}

func (l *Layer) prefetchFiles(ctx context.Context, paths []string, ranges map[string][]prefetchlist.Range) error {
	files, rank := l.prefetchSet(paths, ranges)
	if len(files) == 0 {
		return nil
	}
	defer l.prefetchingList()()
	defer l.opts.sched.beginForeground()()
	p := plan{class: classPrefetch, maxBytes: l.opts.maxPrefetchBytes, maxGap: l.opts.maxGapBytes,
		concurrency: l.opts.concurrency, rank: rank}
	want := func(id index.ID, c index.Chunk) bool {
		rs, ok := files[id]
		return ok && (rs == nil || overlaps(rs, c.FileOffset, c.End()))
	}
	if err := l.fetchWhere(ctx, p, want); err != nil {
		return fmt.Errorf("prefetching %d listed files of layer %s: %w", len(files), l.Digest(), err)
	}
	return nil
}

// prefetchingList marks a prefetch of a learned list as running until the
// returned func is called. Reads do not read ahead meanwhile: the list says
// what start-up reads, and the prefetch is bringing it; a tail would bring
// neighbours the workload did not read (measured on the scipy image with a
// shared trace: 114.6 MB before ready against 85.9 MB when the list's files
// are stored together), and take the link from the prefetch.
func (l *Layer) prefetchingList() func() {
	l.listed.Add(1)
	return func() { l.listed.Add(-1) }
}

// prefetchSet returns the regular files of the layer at paths, each with
// its ranges (nil: the whole file), and each file's rank: its first place
// in paths.
func (l *Layer) prefetchSet(paths []string, ranges map[string][]prefetchlist.Range) (map[index.ID][]prefetchlist.Range, map[index.ID]int) {
	files := map[index.ID][]prefetchlist.Range{}
	rank := map[index.ID]int{}
	for i, p := range paths {
		if id, ok := l.lookupPath(p); ok && l.idx.Mode(id)&syscall.S_IFMT == syscall.S_IFREG {
			if _, seen := rank[id]; !seen {
				rank[id] = i
			}
			files[id] = ranges[p]
		}
	}
	return files, rank
}

// overlaps reports whether sorted, disjoint rs overlap [start, end).
func overlaps(rs []prefetchlist.Range, start, end int64) bool {
	i, _ := slices.BinarySearchFunc(rs, start, func(r prefetchlist.Range, off int64) int {
		return cmp.Compare(r.End, off+1) // the first range ending after start
	})
	return i < len(rs) && rs[i].Start < end
}

// FetchAll fetches every chunk of the layer the cache lacks, in blob order,
// at background priority: one small request at a time, each admitted by
// the scheduler (after every foreground fetch, within its byte rate). When
// it returns nil the cache held every chunk of the layer at some point.
func (l *Layer) FetchAll(ctx context.Context) error {
	p := plan{class: classBackground, maxBytes: l.opts.sched.requestBytes(), maxGap: l.opts.maxGapBytes,
		concurrency: 1}
	// A chunk another fetch was getting may still be missing when that
	// fetch was cancelled: look again, a few times.
	for range maxEnsureRounds {
		if err := l.fetchWhere(ctx, p, func(index.ID, index.Chunk) bool { return true }); err != nil {
			return fmt.Errorf("fetching all of layer %s: %w", l.Digest(), err)
		}
		if chunks, total, _, _ := l.present.load(); chunks == total {
			markDone(&l.stats.backgroundDoneAt)
			return nil
		}
	}
	return fmt.Errorf("layer %s still incomplete after %d passes: %w", l.Digest(), maxEnsureRounds, errdefs.ErrUnavailable)
}

// chunkRef names a chunk of the layer.
type chunkRef struct {
	id index.ID
	i  int
}

// fetchWhere fetches the chunks that want selects, in blob order (with
// p.rank, in the order of its ranks: fetchRanked), one window of
// p.concurrency requests at a time, so that only the files of a window
// hold open cache entries and only its chunks are claimed.
func (l *Layer) fetchWhere(ctx context.Context, p plan, want func(index.ID, index.Chunk) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.ctx, cancel)
	defer stop()

	refs := l.chunksWhere(want)
	window := p.maxBytes * int64(p.concurrency)
	if p.rank != nil {
		return l.fetchRanked(ctx, refs, window, p)
	}
	for len(refs) > 0 {
		n := 1
		start := l.chunkOf(refs[0]).BlobOffset
		for n < len(refs) && l.chunkOf(refs[n]).BlobEnd-start <= window {
			n++
		}
		if err := l.fetchWindow(ctx, refs[:n], p); err != nil {
			return err
		}
		refs = refs[n:]
	}
	return nil
}

// fetchRanked fetches refs (in blob order) in the requests blob order
// makes of them, sent in the order of p.rank: the runs of refs, sorted by
// the lowest rank of the files each brings, go in windows of at most
// window compressed bytes, and each window's requests again by rank.
func (l *Layer) fetchRanked(ctx context.Context, refs []chunkRef, window int64, p plan) error {
	runs := coalesceSorted(refs, l.chunkOf, p.maxBytes, p.maxGap)
	rank := func(run []chunkRef) int {
		best := math.MaxInt
		for _, r := range run {
			if k, ok := p.rank[r.id]; ok {
				best = min(best, k)
			}
		}
		return best
	}
	slices.SortStableFunc(runs, func(a, b []chunkRef) int { return cmp.Compare(rank(a), rank(b)) })
	for len(runs) > 0 {
		var batch []chunkRef
		var size int64
		n := 0
		for ; n < len(runs); n++ {
			run := runs[n]
			bytes := l.chunkOf(run[len(run)-1]).BlobEnd - l.chunkOf(run[0]).BlobOffset
			if n > 0 && size+bytes > window {
				break
			}
			batch, size = append(batch, run...), size+bytes
		}
		if err := l.fetchWindow(ctx, batch, p); err != nil {
			return err
		}
		runs = runs[n:]
	}
	return nil
}

func (l *Layer) chunkOf(r chunkRef) index.Chunk { return l.idx.Chunks(r.id)[r.i] }

// chunksWhere returns the chunks want selects, in blob order.
func (l *Layer) chunksWhere(want func(index.ID, index.Chunk) bool) []chunkRef {
	var refs []chunkRef
	for id := range l.idx.RegularFiles() {
		for i, c := range l.idx.Chunks(id) {
			if want(id, c) {
				refs = append(refs, chunkRef{id, i})
			}
		}
	}
	slices.SortFunc(refs, func(a, b chunkRef) int {
		ca, cb := l.chunkOf(a), l.chunkOf(b)
		return cmp.Or(cmp.Compare(ca.BlobOffset, cb.BlobOffset), cmp.Compare(ca.InnerOffset, cb.InnerOffset))
	})
	return refs
}

// fetchWindow opens the files of refs and fetches their missing chunks.
func (l *Layer) fetchWindow(ctx context.Context, refs []chunkRef, p plan) (err error) {
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
	return l.fetchTargets(ctx, ts, p)
}
