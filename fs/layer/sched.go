package layer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Scheduler orders the fetches of every layer that shares it in two
// classes. Foreground fetches (reads, and prefetches of what a starting
// container wants) run at once. Background fetches (making the rest of a
// layer local) send small requests, a bounded number at once, within a byte
// rate, and start only while no foreground fetch is waiting or running: a
// read never queues behind background work, and shares the link with at
// most the background requests already in flight. Share one Scheduler per
// node (per FS). It is safe for concurrent use.
type Scheduler struct {
	opts    schedOptions
	limiter *rate.Limiter // nil when unlimited

	mu            sync.Mutex
	foreground    int           // foreground fetches waiting or running
	lastForeEnded time.Time     // when the last foreground fetch ended
	background    int           // background requests in flight
	changed       chan struct{} // closed and replaced whenever the counts drop

	backgroundRequests atomic.Int64
}

// SchedulerOption configures a Scheduler.
type SchedulerOption func(*schedOptions)

type schedOptions struct {
	backgroundConcurrency  int
	backgroundRequestBytes int64
	bytesPerSecond         int64
	quietPeriod            time.Duration
	duringReads            bool
}

// defaultSchedOptions holds every default in one place.
func defaultSchedOptions() schedOptions {
	return schedOptions{
		backgroundConcurrency:  1,                             // The default is 1 background request at once per node.
		backgroundRequestBytes: DefaultBackgroundRequestBytes, // The default is 2 MiB.
		bytesPerSecond:         0,                             // The default is no bandwidth cap.
		quietPeriod:            DefaultQuietPeriod,
		duringReads:            false, // The default is to wait for reads to pause.
	}
}

// Defaults of the scheduler, exported for the daemon's configuration.
const (
	DefaultBackgroundRequestBytes = 2 << 20
	DefaultQuietPeriod            = 500 * time.Millisecond
)

// WithBackgroundConcurrency bounds the background requests in flight at once,
// over every layer. The default is 1.
func WithBackgroundConcurrency(n int) SchedulerOption {
	return func(o *schedOptions) { o.backgroundConcurrency = max(1, n) }
}

// WithBackgroundRequestBytes caps the compressed bytes of one background
// request: it bounds how long a read that arrives meanwhile shares the link
// with it. The default is 2 MiB.
func WithBackgroundRequestBytes(n int64) SchedulerOption {
	return func(o *schedOptions) { o.backgroundRequestBytes = max(1, n) }
}

// WithBackgroundBytesPerSecond caps the compressed bytes per second that
// background requests ask for, over every layer; 0 is no cap. The default
// is 0.
func WithBackgroundBytesPerSecond(n int64) SchedulerOption {
	return func(o *schedOptions) { o.bytesPerSecond = max(0, n) }
}

// WithQuietPeriod sets how long no foreground fetch must have run before a
// background request starts. A starting container reads file after file
// with only moments of CPU work between them; a background request that
// slips into such a gap holds the link when the next read comes (a 2 MiB
// request is 80 ms at 200 Mbit/s), so background work waits until reads
// have paused for a while. The default is 500 ms.
func WithQuietPeriod(d time.Duration) SchedulerOption {
	return func(o *schedOptions) { o.quietPeriod = max(0, d) }
}

// WithDuringReads sets whether background requests start while reads run
// (and without waiting for the quiet period), within their own concurrency
// and request size. Reads still never wait for background work: they take
// no background slot; they share the link with at most the background
// requests in flight. The default is false.
func WithDuringReads(on bool) SchedulerOption {
	return func(o *schedOptions) { o.duringReads = on }
}

// NewScheduler returns a Scheduler.
func NewScheduler(opts ...SchedulerOption) *Scheduler {
	o := defaultSchedOptions()
	for _, opt := range opts {
		opt(&o)
	}
	s := &Scheduler{opts: o, changed: make(chan struct{})}
	if o.bytesPerSecond > 0 {
		// The burst must hold one whole request, or WaitN refuses it.
		s.limiter = rate.NewLimiter(rate.Limit(o.bytesPerSecond), int(max(o.bytesPerSecond, o.backgroundRequestBytes)))
	}
	return s
}

// SchedulerStats are the scheduler's counters.
type SchedulerStats struct {
	BackgroundRequests int64 // background requests admitted
	ForegroundActive   int   // foreground fetches waiting or running now
	BackgroundActive   int   // background requests in flight now
}

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() SchedulerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SchedulerStats{
		BackgroundRequests: s.backgroundRequests.Load(),
		ForegroundActive:   s.foreground,
		BackgroundActive:   s.background,
	}
}

// beginForeground records a foreground fetch until the returned func is
// called: no background request starts meanwhile.
func (s *Scheduler) beginForeground() (end func()) {
	s.mu.Lock()
	s.foreground++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.foreground--
			s.lastForeEnded = time.Now()
			s.notifyLocked()
		})
	}
}

// admitBackground waits until a background request of n bytes may start:
// within the byte rate, no foreground fetch pending, and a free slot. The
// caller calls release when the request's body is read.
func (s *Scheduler) admitBackground(ctx context.Context, n int64) (release func(), err error) {
	if s.limiter != nil {
		if err := s.limiter.WaitN(ctx, int(min(n, int64(s.limiter.Burst())))); err != nil {
			return nil, fmt.Errorf("waiting for background bandwidth: %w", err)
		}
	}
	if err := s.takeSlot(ctx); err != nil {
		return nil, err
	}
	s.backgroundRequests.Add(1)
	return s.releaseBackground, nil
}

// admitLocal waits, as admitBackground does but without taking bandwidth
// or counting a request, until background work that needs no registry may
// run: the diff_id stream's spooled bytes, whose decompressing, hashing and
// storing must no more compete with reads than a request's would.
func (s *Scheduler) admitLocal(ctx context.Context) (release func(), err error) {
	if err := s.takeSlot(ctx); err != nil {
		return nil, err
	}
	return s.releaseBackground, nil
}

// takeSlot waits for a background slot, no foreground fetch pending and
// the quiet period over, and takes the slot.
func (s *Scheduler) takeSlot(ctx context.Context) error {
	for {
		s.mu.Lock()
		quietFor := s.opts.quietPeriod - time.Since(s.lastForeEnded)
		readsDone := s.opts.duringReads || (s.foreground == 0 && quietFor <= 0)
		if s.opts.duringReads {
			quietFor = 0
		}
		if readsDone && s.background < s.opts.backgroundConcurrency {
			s.background++
			s.mu.Unlock()
			return nil
		}
		changed := s.changed
		s.mu.Unlock()
		if err := waitChange(ctx, changed, quietFor); err != nil {
			return err
		}
	}
}

// waitChange waits until changed is closed or, when quietFor is positive,
// that long (the quiet period may end without any count changing).
func waitChange(ctx context.Context, changed <-chan struct{}, quietFor time.Duration) error {
	var expired <-chan time.Time
	if quietFor > 0 {
		t := time.NewTimer(quietFor)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-changed:
	case <-expired:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (s *Scheduler) releaseBackground() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.background--
	s.notifyLocked()
}

// notifyLocked wakes every waiter to look at the counts again.
func (s *Scheduler) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// requestBytes is the largest background request.
func (s *Scheduler) requestBytes() int64 { return s.opts.backgroundRequestBytes }
