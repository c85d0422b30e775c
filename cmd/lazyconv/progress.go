package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"

	"github.com/lazysnap/lazysnap/convert"
)

// newProgress returns a progress reporter for w: redrawn lines, one per
// layer, on a terminal; a log line per layer step otherwise; nothing when
// quiet.
func newProgress(w *os.File, quiet bool) convert.Progress {
	switch {
	case quiet:
		return convert.ProgressFunc(func(convert.LayerStatus) {})
	case isTerminal(w):
		return &ttyProgress{w: w, lines: make(map[int]string)}
	}
	return convert.ProgressFunc(logProgress)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// logProgress logs the steps of each layer, not every byte read.
func logProgress(s convert.LayerStatus) {
	switch s.Phase {
	case convert.PhaseBuild:
		slog.Info("building layer", "layer", s.Index, "source", s.Source.String())
	case convert.PhaseDone, convert.PhaseKept:
		r := s.Result
		slog.Info("layer "+string(s.Phase), "layer", s.Index, "source", r.Source.String(), "digest", r.Digest.String(),
			"size", r.Size, "toc", r.TOCDigest, "prioritized", r.Prioritized, "ranged", r.Ranged)
	}
}

// ttyProgress keeps one line per layer and redraws them all in place.
type ttyProgress struct {
	mu    sync.Mutex
	w     io.Writer
	lines map[int]string
	drawn int
}

func (p *ttyProgress) Update(s convert.LayerStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines[s.Index] = statusLine(s)
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA", p.drawn) // back to the first line
	}
	idx := make([]int, 0, len(p.lines))
	for i := range p.lines {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		fmt.Fprintf(p.w, "\r\x1b[2K%s\n", p.lines[i])
	}
	p.drawn = len(idx)
}

func statusLine(s convert.LayerStatus) string {
	short := s.Source.Hex
	if len(short) > 12 {
		short = short[:12]
	}
	switch s.Phase {
	case convert.PhaseRead:
		if s.Total > 0 {
			return fmt.Sprintf("layer %d %s reading %5.1f%% of %s", s.Index, short, 100*float64(s.Done)/float64(s.Total), mib(s.Total))
		}
		return fmt.Sprintf("layer %d %s reading %s", s.Index, short, mib(s.Done))
	case convert.PhaseBuild:
		return fmt.Sprintf("layer %d %s building", s.Index, short)
	}
	r := s.Result
	return fmt.Sprintf("layer %d %s %s -> %s (%s, %d prioritized, %d ranged)", s.Index, short, s.Phase, r.Digest.Hex[:12], mib(r.Size), r.Prioritized, r.Ranged)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
