package layer

import (
	"sync"
	"time"

	"github.com/lazysnap/lazysnap/fs/index"
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
//
// It also learns how often the files a tail brings are opened later (the
// hit rate h). Each tail file costs the stream perFile and saves a round
// trip only if it is opened, so read-ahead pays while h x round trip >
// perFile, and is off while it does not: on a fast link a layer whose
// start-up opens few neighbours stops reading ahead. The files brought
// keep being counted as they are opened, so h, and read-ahead, come back
// when the workload turns to a package it reads whole.
type raModel struct {
	mu      sync.Mutex
	rtt     time.Duration // moving average of a read request's round trip
	perFile time.Duration // moving average of the stream's time per tail file
	brought float64       // files tails brought (decayed)
	opened  float64       // of those, files opened since (decayed)

	unread sync.Map // index.ID -> struct{}: brought by a tail, not opened yet
}

const (
	// raInitialFiles is the tail before anything is measured: enough to
	// take a first measurement, too little to cost much.
	raInitialFiles = 8
	// raWeight is the weight of the moving averages' past: a new sample
	// counts for 1/raWeight.
	raWeight = 4
	// raPriorBrought and raPriorOpened are the hit rate assumed before
	// any tail was opened (1/2), worth this many files of evidence.
	raPriorBrought, raPriorOpened = 8, 4
	// raMemory is how many files of evidence the hit rate keeps: past it,
	// both counts are halved, so the rate follows the workload's phases.
	raMemory = 256
)

// maxFiles is how many files past a read's own the tail may reach: none
// while tails do not pay (see raModel).
func (m *raModel) maxFiles() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rtt == 0 || m.perFile == 0 {
		return raInitialFiles
	}
	hitRate := (m.opened + raPriorOpened) / (m.brought + raPriorBrought)
	if hitRate*float64(m.rtt) < float64(m.perFile) {
		return 0
	}
	return min(max(int(m.rtt/m.perFile), 1), maxReadAheadChunks)
}

// observeBrought records the files a tail stored.
func (m *raModel) observeBrought(ids []index.ID) {
	for _, id := range ids {
		m.unread.Store(id, struct{}{})
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.brought += float64(len(ids))
	if m.brought > raMemory {
		m.brought, m.opened = m.brought/2, m.opened/2
	}
}

// observeOpen records that the workload opened file id.
func (m *raModel) observeOpen(id index.ID) {
	if _, ok := m.unread.LoadAndDelete(id); !ok {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opened = min(m.opened+1, m.brought)
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
