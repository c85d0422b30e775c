package layer

import (
	"context"
	"fmt"
	"math"
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
	yieldingSince time.Time     // when background work began to wait for a busy node; zero when it is not
	yieldSpent    bool          // the node stayed busy for maxYield: run until it has cores free again

	backgroundRequests atomic.Int64
	yielded            atomic.Int64 // nanoseconds background work waited for a busy node
}

// NodeLoad tells how much of the node's CPU other processes leave free.
// nodecpu.Sampler implements it from /proc.
type NodeLoad interface {
	// FreeCores returns the cores other processes have left free lately.
	FreeCores() float64
}

// SchedulerOption configures a Scheduler.
type SchedulerOption func(*schedOptions)

type schedOptions struct {
	backgroundConcurrency  int
	backgroundRequestBytes int64
	bytesPerSecond         int64
	quietPeriod            time.Duration
	duringReads            bool
	nodeLoad               NodeLoad
	minFreeCores           float64
	maxYield               time.Duration
}

// defaultSchedOptions holds every default in one place.
func defaultSchedOptions() schedOptions {
	return schedOptions{
		backgroundConcurrency:  1,                             // The default is 1 background request at once per node.
		backgroundRequestBytes: DefaultBackgroundRequestBytes, // The default is 2 MiB.
		bytesPerSecond:         0,                             // The default is no bandwidth cap.
		quietPeriod:            DefaultQuietPeriod,
		duringReads:            false, // The default is to wait for reads to pause.
		nodeLoad:               nil,   // The default is not to look at the node's CPU.
		minFreeCores:           DefaultMinFreeCores,
		maxYield:               DefaultMaxYield,
	}
}

// Defaults of the scheduler, exported for the daemon's configuration.
const (
	DefaultBackgroundRequestBytes = 2 << 20
	DefaultQuietPeriod            = 500 * time.Millisecond
	DefaultMinFreeCores           = 1.5
	DefaultMaxYield               = 10 * time.Second
)

// yieldPoll is how often background work that yields to a busy node looks
// at the node's CPU again.
const yieldPoll = 100 * time.Millisecond

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

// WithYieldToBusyNode makes background work wait, after the quiet period,
// while the node's other processes leave fewer than minFreeCores cores free
// (as load reports): the link is quiet while a starting workload computes
// with every file it needs already local, and decompressing, hashing and
// storing the rest of its image then takes the cores it computes on. A node
// busy for good must still complete its layers, so the background waits at
// most maxYield in a row, and then runs as if load were not given until the
// node has had cores free again. The default is not to yield (load nil),
// 1.5 cores and 10 s.
func WithYieldToBusyNode(load NodeLoad, minFreeCores float64, maxYield time.Duration) SchedulerOption {
	return func(o *schedOptions) {
		o.nodeLoad = load
		o.minFreeCores = max(0, minFreeCores)
		o.maxYield = max(0, maxYield)
	}
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
	// BackgroundYielded is how long, in all, background work waited for a
	// busy node (WithYieldToBusyNode).
	BackgroundYielded time.Duration
}

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() SchedulerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SchedulerStats{
		BackgroundRequests: s.backgroundRequests.Load(),
		ForegroundActive:   s.foreground,
		BackgroundActive:   s.background,
		BackgroundYielded:  time.Duration(s.yielded.Load()),
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

// takeSlot waits for a background slot, no foreground fetch pending, the
// quiet period over and the node not busy, and takes the slot.
func (s *Scheduler) takeSlot(ctx context.Context) error {
	for {
		free := s.freeCores() // outside the lock: it may read /proc
		s.mu.Lock()
		quietFor := s.opts.quietPeriod - time.Since(s.lastForeEnded)
		readsDone := s.opts.duringReads || (s.foreground == 0 && quietFor <= 0)
		if s.opts.duringReads {
			quietFor = 0
		}
		if readsDone && s.background < s.opts.backgroundConcurrency {
			if quietFor = s.yieldLocked(time.Now(), free); quietFor == 0 {
				s.background++
				s.mu.Unlock()
				return nil
			}
		}
		changed := s.changed
		s.mu.Unlock()
		if err := waitChange(ctx, changed, quietFor); err != nil {
			return err
		}
	}
}

// freeCores returns the cores the node's other processes leave free, or
// +Inf when the scheduler does not look at the node.
func (s *Scheduler) freeCores() float64 {
	if s.opts.nodeLoad == nil {
		return math.Inf(1)
	}
	return s.opts.nodeLoad.FreeCores()
}

// yieldLocked returns how long background work that could start now, with
// free cores left by the node's other processes, waits before asking
// again; 0 when it starts.
func (s *Scheduler) yieldLocked(now time.Time, free float64) time.Duration {
	if free >= s.opts.minFreeCores {
		s.endYieldLocked(now)
		s.yieldSpent = false
		return 0
	}
	if s.yieldSpent {
		return 0
	}
	if s.yieldingSince.IsZero() {
		s.yieldingSince = now
	}
	if now.Sub(s.yieldingSince) >= s.opts.maxYield {
		s.endYieldLocked(now)
		s.yieldSpent = true
		return 0
	}
	return yieldPoll
}

// endYieldLocked ends a yield, adding its length to the total.
func (s *Scheduler) endYieldLocked(now time.Time) {
	if !s.yieldingSince.IsZero() {
		s.yielded.Add(int64(now.Sub(s.yieldingSince)))
		s.yieldingSince = time.Time{}
	}
}

// waitChange waits until changed is closed or, when wait is positive, that
// long (the quiet period may end, or a node grow idle, without any count
// changing).
func waitChange(ctx context.Context, changed <-chan struct{}, wait time.Duration) error {
	var expired <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
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
