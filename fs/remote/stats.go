package remote

import "sync/atomic"

// counters are the live form of Stats, updated from many goroutines.
type counters struct {
	requests atomic.Int64
	bytes    atomic.Int64
	retries  atomic.Int64
	tailHits atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{Requests: c.requests.Load(), BytesFetched: c.bytes.Load(), Retries: c.retries.Load(),
		TailHits: c.tailHits.Load()}
}

// blobCounters updates a blob's counters and its resolver's together.
type blobCounters struct {
	own    counters
	parent *counters
}

func (c *blobCounters) request() { c.own.requests.Add(1); c.parent.requests.Add(1) }
func (c *blobCounters) retry()   { c.own.retries.Add(1); c.parent.retries.Add(1) }
func (c *blobCounters) tailHit() { c.own.tailHits.Add(1); c.parent.tailHits.Add(1) }
func (c *blobCounters) fetched(n int64) {
	if n > 0 {
		c.own.bytes.Add(n)
		c.parent.bytes.Add(n)
	}
}
