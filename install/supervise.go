package install

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Restart backoff of Supervise: doubling from superviseMinBackoff up to
// superviseMaxBackoff, back to the minimum after a run of superviseStableRun.
const (
	superviseMinBackoff = time.Second
	superviseMaxBackoff = 30 * time.Second
	superviseStableRun  = time.Minute
	superviseStopGrace  = 10 * time.Second
)

// Supervise runs argv and starts it again whenever it exits, until ctx ends;
// then it sends SIGTERM and waits for the process. It is the service manager
// of hosts without systemd ("lazysnap-install supervise").
func Supervise(ctx context.Context, logger *slog.Logger, argv []string) error {
	if len(argv) == 0 {
		return errors.New("supervise: no command given")
	}
	backoff := superviseMinBackoff
	for {
		started := time.Now()
		err := runOnce(ctx, argv)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > superviseStableRun {
			backoff = superviseMinBackoff
		}
		logger.Warn("supervised process exited; restarting", "cmd", argv[0], "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, superviseMaxBackoff)
	}
}

func runOnce(ctx context.Context, argv []string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// A graceful stop: lazysnap serve exits cleanly on SIGTERM.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = superviseStopGrace
	// The supervisor's own output is lazysnap's log file.
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running %s: %w", argv[0], err)
	}
	return nil
}
