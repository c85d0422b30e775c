package layer

import (
	"context"
	"errors"
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
