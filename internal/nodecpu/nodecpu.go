// Package nodecpu measures how many of the node's cores the processes other
// than this one leave free, from /proc/stat and /proc/self/stat.
package nodecpu

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/procfs"
)

// DefaultInterval is the shortest window a Sampler measures over: /proc/stat
// counts in 10 ms ticks, so a shorter window on a small node is mostly
// rounding.
const DefaultInterval = 100 * time.Millisecond

// Sampler reports the cores the rest of the node leaves free: every core,
// less the time all processes but this one ran. This process's own time
// counts as free, as it is the work the caller is deciding whether to do.
// It is safe for concurrent use.
type Sampler struct {
	fs       procfs.FS
	self     procfs.Proc
	interval time.Duration

	mu       sync.Mutex
	last     sample
	lastFree float64
}

type sample struct {
	at    time.Time
	cores int
	total float64 // CPU seconds of every core, idle included
	busy  float64 // CPU seconds not idle, this process included
	self  float64 // CPU seconds of this process
}

// New returns a Sampler of the host's /proc that measures over windows of at
// least interval (DefaultInterval when interval is 0).
func New(interval time.Duration) (*Sampler, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, fmt.Errorf("opening /proc: %w", err)
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	self, err := fs.Self()
	if err != nil {
		return nil, fmt.Errorf("finding /proc/self: %w", err)
	}
	s := &Sampler{fs: fs, self: self, interval: interval}
	first, err := s.read()
	if err != nil {
		return nil, err
	}
	s.last = first
	s.lastFree = float64(first.cores)
	return s, nil
}

// FreeCores returns the cores that the node's other processes left free
// over the window since the previous measurement, measuring again when
// that window is at least the interval long and returning the previous
// figure otherwise. If /proc cannot be read, it reports every core free:
// a node that cannot be measured is not held back.
func (s *Sampler) FreeCores() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.last.at) < s.interval {
		return s.lastFree
	}
	now, err := s.read()
	if err != nil {
		s.lastFree = float64(s.last.cores)
		return s.lastFree
	}
	s.lastFree = freeCores(s.last, now)
	s.last = now
	return s.lastFree
}

// freeCores is the cores other processes left free between two samples.
func freeCores(prev, now sample) float64 {
	total := now.total - prev.total
	if total <= 0 || now.cores == 0 {
		return float64(now.cores)
	}
	others := (now.busy - prev.busy) - (now.self - prev.self)
	free := float64(now.cores) * (1 - max(0, others)/total)
	return min(float64(now.cores), max(0, free))
}

func (s *Sampler) read() (sample, error) {
	at := time.Now()
	st, err := s.fs.Stat()
	if err != nil {
		return sample{}, fmt.Errorf("reading /proc/stat: %w", err)
	}
	ps, err := s.self.Stat()
	if err != nil {
		return sample{}, fmt.Errorf("reading /proc/self/stat: %w", err)
	}
	c := st.CPUTotal
	// Guest time is already counted in user time.
	busy := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
	return sample{
		at:    at,
		cores: len(st.CPU),
		total: busy + c.Idle + c.Iowait,
		busy:  busy,
		self:  ps.CPUTime(),
	}, nil
}
