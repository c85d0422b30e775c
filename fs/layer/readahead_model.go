package layer

import (
	"sync"
	"time"
)

// raModel learns, for one layer, what read-ahead costs and what it saves:
// the round trip of a read's own request (until its own chunks are stored),
// and the time the request then spends per file it stores after them.
// The tail is cut to the files the stream stores within one round trip.
//
// That is the bet read-ahead can afford on any link and disk. A read that
// lands in the tail waits less than the round trip it saves; a tail that is
// never read costs at most a round trip of the stream's time, and of the
// cores it shares with the workload. With a fixed budget, read-ahead was
// 10% faster at 200 Mbit/s + 20 ms but 65% slower at 1 Gbit/s + 2 ms
// (docs/design.md, "Data path"): there a round trip is 3 ms, while storing
// a small file costs a file creation (about 0.3-1 ms on the test machine's
// ext4, BenchmarkSmallEntry), so a 256 KiB tail of ~60 small files kept the
// next read waiting for ten round trips' worth of stores.
type raModel struct {
	mu      sync.Mutex
	rtt     time.Duration // moving average of a read request's round trip
	perFile time.Duration // moving average of the stream's time per tail file
}

const (
	// raInitialFiles is the tail before anything is measured: enough to
	// take a first measurement, too little to cost much.
	raInitialFiles = 8
	// raWeight is the weight of the moving averages' past: a new sample
	// counts for 1/raWeight.
	raWeight = 4
)

// maxFiles is how many files past a read's own the tail may reach.
func (m *raModel) maxFiles() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rtt == 0 || m.perFile == 0 {
		return raInitialFiles
	}
	return min(max(int(m.rtt/m.perFile), 1), maxReadAheadChunks)
}

// observeRoundTrip records how long a read's request took to store the
// read's own chunks.
func (m *raModel) observeRoundTrip(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rtt = average(m.rtt, d)
}

// observeTail records that a read-ahead stream stored files files in d
// after the read's own chunks.
func (m *raModel) observeTail(d time.Duration, files int) {
	if files <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.perFile = average(m.perFile, max(d/time.Duration(files), time.Microsecond))
}

func average(avg, sample time.Duration) time.Duration {
	if avg == 0 {
		return sample
	}
	return avg + (sample-avg)/raWeight
}
