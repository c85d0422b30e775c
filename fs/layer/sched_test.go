package layer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestBackgroundWaitsForForeground: no background request is admitted while
// a foreground fetch is pending, and one is as soon as none is; admission
// honours its slot bound and ctx.
func TestBackgroundWaitsForForeground(t *testing.T) {
	s := NewScheduler(WithBackgroundConcurrency(1))
	end := s.beginForeground()
	admitted := make(chan func(), 1)
	go func() {
		release, err := s.admitBackground(context.Background(), 1<<20)
		if err != nil {
			t.Error(err)
		}
		admitted <- release
	}()
	// While the foreground is pending, a bounded wait for admission fails.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.admitBackground(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("admission during foreground: %v, want context.Canceled", err)
	}
	select {
	case <-admitted:
		t.Fatal("background admitted while a foreground fetch was pending")
	default:
	}
	end()
	release := <-admitted
	if st := s.Stats(); st.BackgroundActive != 1 || st.ForegroundActive != 0 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := s.admitBackground(ctx, 1); err == nil {
		t.Fatal("second background request admitted beyond the slot bound")
	}
	release()
	if st := s.Stats(); st.BackgroundActive != 0 || st.BackgroundRequests != 1 {
		t.Fatalf("stats after release %+v", st)
	}
}

// TestBackgroundWaitsForQuietPeriod: after a foreground fetch ends, no
// background request starts until reads have paused for the quiet period;
// with none, one starts at once.
func TestBackgroundWaitsForQuietPeriod(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel() // admission must succeed at once or not at all

	s := NewScheduler(WithQuietPeriod(time.Hour))
	s.beginForeground()()
	if _, err := s.admitBackground(canceled, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("admission right after a read, inside the quiet period: %v, want context.Canceled", err)
	}

	s = NewScheduler(WithQuietPeriod(0))
	s.beginForeground()()
	release, err := s.admitBackground(canceled, 1)
	if err != nil {
		t.Fatalf("admission without a quiet period: %v", err)
	}
	release()

	s = NewScheduler(WithQuietPeriod(time.Hour))
	release, err = s.admitBackground(canceled, 1) // no read ever: nothing to wait for
	if err != nil {
		t.Fatalf("admission on an idle node: %v", err)
	}
	release()
}

// TestBackgroundDuringReads: with WithDuringReads, a background request is
// admitted while a read runs and inside the quiet period, but still within
// its slot bound.
func TestBackgroundDuringReads(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel() // admission must succeed at once or not at all

	s := NewScheduler(WithDuringReads(true), WithQuietPeriod(time.Hour), WithBackgroundConcurrency(1))
	end := s.beginForeground()
	defer end()
	release, err := s.admitBackground(canceled, 1)
	if err != nil {
		t.Fatalf("admission while a read runs: %v", err)
	}
	if _, err := s.admitBackground(canceled, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("second background request beyond the slot bound: %v, want context.Canceled", err)
	}
	release()
}

// fakeLoad is a NodeLoad whose free cores the test sets.
type fakeLoad struct {
	mu   sync.Mutex
	free float64
}

func (l *fakeLoad) FreeCores() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.free
}

func (l *fakeLoad) set(free float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.free = free
}

// TestBackgroundYieldsToBusyNode: with WithYieldToBusyNode, no background
// request starts while the node's other processes leave too few cores free,
// one starts once they leave enough, and the wait shows in the stats.
func TestBackgroundYieldsToBusyNode(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel() // admission must succeed at once or not at all

	load := &fakeLoad{free: 0.5}
	s := NewScheduler(WithQuietPeriod(0), WithYieldToBusyNode(load, 1.5, time.Hour))
	if _, err := s.admitBackground(canceled, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("admission on a busy node: %v, want context.Canceled", err)
	}
	if _, err := s.admitLocal(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("local background work on a busy node: %v, want context.Canceled", err)
	}
	admitted := make(chan error, 1)
	go func() {
		release, err := s.admitBackground(context.Background(), 1)
		if err == nil {
			release()
		}
		admitted <- err
	}()
	time.Sleep(3 * yieldPoll)
	select {
	case err := <-admitted:
		t.Fatalf("admitted while the node stayed busy (err %v)", err)
	default:
	}
	load.set(2)
	if err := <-admitted; err != nil {
		t.Fatal(err)
	}
	if y := s.Stats().BackgroundYielded; y < 3*yieldPoll {
		t.Fatalf("BackgroundYielded = %v, want at least %v", y, 3*yieldPoll)
	}
}

// TestBackgroundYieldIsBounded: on a node that stays busy, background work
// waits maxYield and then runs without waiting again, until the node has
// had cores free, after which it yields again.
func TestBackgroundYieldIsBounded(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	load := &fakeLoad{free: 0}
	const maxYield = 2 * yieldPoll
	s := NewScheduler(WithQuietPeriod(0), WithBackgroundConcurrency(4), WithYieldToBusyNode(load, 1, maxYield))
	start := time.Now()
	release, err := s.admitBackground(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if waited := time.Since(start); waited < maxYield {
		t.Fatalf("admitted after %v on a busy node, want at least maxYield %v", waited, maxYield)
	}
	for range 3 { // the yield is spent: no more waiting while busy
		release, err := s.admitBackground(canceled, 1)
		if err != nil {
			t.Fatalf("admission after the yield was spent: %v", err)
		}
		release()
	}
	load.set(1) // cores free again: the next busy spell yields anew
	release, err = s.admitBackground(canceled, 1)
	if err != nil {
		t.Fatalf("admission on an idle node: %v", err)
	}
	release()
	load.set(0)
	if _, err := s.admitBackground(canceled, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("admission in a new busy spell: %v, want context.Canceled", err)
	}
}
