package install

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSuperviseRestartsUntilCancelled runs a command that exits at once and
// waits for the supervisor to start it a second time.
func TestSuperviseRestartsUntilCancelled(t *testing.T) {
	starts := filepath.Join(t.TempDir(), "starts")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Supervise(ctx, slog.New(slog.DiscardHandler), []string{"sh", "-c", "echo start >> " + starts + "; exit 3"})
	}()
	for {
		b, _ := os.ReadFile(starts)
		if bytes.Count(b, []byte("start")) >= 2 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Supervise returned before being cancelled: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Supervise after cancel: %v", err)
	}
}
