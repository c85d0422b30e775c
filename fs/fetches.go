package fs

import (
	"context"
	"time"

	"github.com/lazysnap/lazysnap/fs/layer"
)

// fetches is a mounted layer's own work: its prefetch, then its background
// fetch, in one goroutine.
type fetches struct {
	cancel     context.CancelFunc
	prefetched chan struct{} // closed when the prefetch is over (done, failed or off)
	done       chan struct{} // closed when the goroutine returned
}

// startFetches starts the layer's prefetch, then its diff_id verification
// (whose stream fills the cache) and its background fetch (of what the
// stream did not bring), as the options ask.
func (f *FS) startFetches(m *mounted) *fetches {
	l := m.layer
	ctx, cancel := context.WithCancel(context.Background())
	w := &fetches{cancel: cancel, prefetched: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		f.prefetch(ctx, m)
		close(w.prefetched)
		if m.verify {
			f.verifyChain(ctx, m)
		}
		// Streamed, or not going to be (verified before): what the spool
		// kept for the stream is of no use now.
		l.DropSpool()
		if f.opts.background && l.Bad() == nil {
			f.fetchAll(ctx, l)
		}
	}()
	return w
}

func (f *FS) prefetch(ctx context.Context, m *mounted) {
	if !f.opts.prefetch {
		return
	}
	l, start := m.layer, time.Now()
	paths, ranges := m.tracePaths, m.traceRanges
	if m.sharedTrace != nil {
		if p, ok := m.sharedTrace.Wait(ctx); ok {
			paths, ranges = p.Paths, p.Ranges
		}
	}
	prefetch := l.Prefetch
	switch {
	case len(paths) > 0:
		prefetch = func(ctx context.Context) error { return l.PrefetchFiles(ctx, paths, ranges) }
	case len(m.labelPaths) > 0:
		prefetch = func(ctx context.Context) error {
			return l.PrefetchRegionAndFiles(ctx, m.labelPaths, m.labelRanges)
		}
	}
	if err := prefetch(ctx); err != nil {
		if ctx.Err() == nil {
			f.opts.logger.Warn("prefetch failed; files are fetched when read", "layer", l.Digest(), "error", err)
		}
		return
	}
	f.opts.logger.Debug("prefetched", "layer", l.Digest(), "took", time.Since(start))
}

func (f *FS) fetchAll(ctx context.Context, l *layer.Layer) {
	start := time.Now()
	if err := l.FetchAll(ctx); err != nil {
		if ctx.Err() == nil {
			f.opts.logger.Warn("background fetch failed; the rest is fetched when read", "layer", l.Digest(), "error", err)
		}
		return
	}
	f.opts.logger.Info("layer complete in the cache", "layer", l.Digest(), "took", time.Since(start))
}

// stop cancels the fetches and waits for them to return, so nothing uses
// the layer or the cache after unmount.
func (w *fetches) stop() {
	w.cancel()
	<-w.done
}

// waitPrefetch waits at most d for the prefetch, or until ctx is done.
// It reports whether the prefetch was over.
func (w *fetches) waitPrefetch(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.prefetched:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}
