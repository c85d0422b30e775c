package fusedproc

import (
	"context"
	"time"
)

// Supervise keeps a fused answering on socket until ctx is done: every
// interval it asks fused whether it is up and, when it does not answer
// twice in a row (a crash, an OOM kill, a kill -9), starts argv again as
// Ensure does and then calls restarted, with which the caller mounts again
// what the dead fused held. A start that fails is tried again on the next
// round. It returns nil when ctx is done.
func Supervise(ctx context.Context, socket string, argv []string, interval time.Duration,
	restarted func(context.Context), opts ...Option) error {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	c := newClient(socket)
	t := time.NewTicker(interval)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-o.died:
			// Told fused is gone: one failed check is enough.
			misses = 1
		}
		hctx, cancel := context.WithTimeout(ctx, interval)
		err := c.Healthz(hctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			misses = 0
			continue
		}
		if misses++; misses < 2 {
			continue
		}
		o.logger.ErrorContext(ctx, "fused does not answer; starting it again", "socket", socket, "error", err)
		if _, err := Ensure(ctx, socket, argv, opts...); err != nil {
			o.logger.ErrorContext(ctx, "starting fused again failed; trying again", "error", err)
			continue
		}
		misses = 0
		restarted(ctx)
	}
}
