package layer

import (
	"context"
	"errors"
	"testing"
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
