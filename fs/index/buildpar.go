package index

import (
	"sync"
	"sync/atomic"
)

// Build's per-entry work that depends on one entry alone (cleaning names,
// parsing digests and times, checking chunks, hashing content keys: most of
// its time on a big layer) is done for every entry before the phase that
// needs it walks the entries, on several cores for a large TOC (goEach);
// the phases then walk the entries in their order as before and stop at
// the first error, so the index and the errors are the same whatever the
// number of workers.

// buildWorkers is how many goroutines Build does the per-entry work of a TOC
// of n entries with: WithDecodeWorkers's, or 1 below minParallelEntries.
func (o options) buildWorkers(n int) int {
	if n < o.minParallelEntries {
		return 1
	}
	return o.workers()
}

// eachBatch is how many indices a worker of goEach takes at a time: few
// enough that a worker whose core is busy elsewhere leaves little for the
// others to wait for, enough that taking them costs nothing.
const eachBatch = 512

// goEach calls f for every index in [0, n), a batch of indices at a time:
// from now on on up to b.workers-1 new goroutines, and on the calling
// goroutine too once it calls join(true), which returns when every index is
// done (with tick's error if b.ctx was cancelled, which stops the workers
// within a batch). join(false), for a build that failed meanwhile, stops
// the workers and waits for them. With one worker, f runs only in join, on
// the calling goroutine. f must write only what belongs to its index.
func (b *builder) goEach(n int, f func(i int)) (join func(run bool) error) {
	var (
		next atomic.Int64
		stop atomic.Bool
		wg   sync.WaitGroup
	)
	work := func() {
		for !stop.Load() && b.ctx.Err() == nil {
			lo := int(next.Add(eachBatch)) - eachBatch
			if lo >= n {
				return
			}
			for i := lo; i < min(lo+eachBatch, n); i++ {
				f(i)
			}
		}
	}
	// The caller takes a batch too: no more goroutines than other batches.
	for range min(b.workers-1, (n-1)/eachBatch) {
		wg.Go(work)
	}
	return func(run bool) error {
		if !run {
			stop.Store(true)
			wg.Wait()
			return nil
		}
		work()
		wg.Wait()
		return tick(b.ctx, 0)
	}
}

// goDo runs f on a new goroutine, or with one worker on the calling
// goroutine when it calls the returned wait, which returns once f has.
func (b *builder) goDo(f func()) (wait func()) {
	if b.workers <= 1 {
		return f
	}
	var wg sync.WaitGroup
	wg.Go(f)
	return wg.Wait
}
