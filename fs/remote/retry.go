package remote

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is the wait before retry number n (1-based): the initial wait
// doubled per retry, capped, with up to half of it taken off at random so
// that clients failing together do not retry together.
func (o *options) backoff(n int) time.Duration {
	d := o.minBackoff
	for i := 1; i < n && d < o.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, o.maxBackoff)
	if half := int64(d / 2); half > 0 {
		d -= time.Duration(rand.Int64N(half))
	}
	return d
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
