// Package trace records, per image, the order in which its files are first
// opened after mount, and for large files the byte ranges read of them,
// and stores it as a prefetch list (package prefetchlist), which is what
// `lazyconv convert --prioritize` reads. Recording is cheap and bounded: the
// FUSE side reports each file of a layer once and hands over the ranges
// read when the trace is saved (see fs/node), and a Recorder keeps at most
// a fixed number of paths, and at most prefetchlist.MaxRanges ranges each.
package trace

import (
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// Recorder records the first-open order of one image's files. It is safe
// for concurrent use.
type Recorder struct {
	image string
	max   int

	mu      sync.Mutex
	seen    map[string]struct{}
	paths   []string
	ranges  map[string][]prefetchlist.Range // of recorded paths; nil until some
	dropped int64                           // paths not recorded because the recorder was full
	dirty   bool                            // recorded since the last MarkSaved
}

// NewRecorder returns an empty Recorder for image keeping at most maxPaths
// paths (at least 1).
func NewRecorder(image string, maxPaths int) *Recorder {
	return &Recorder{image: image, max: max(1, maxPaths), seen: map[string]struct{}{}}
}

// Image returns the image the recorder is for.
func (r *Recorder) Image() string { return r.image }

// Record appends path (made absolute and clean) unless it was recorded
// already or the recorder is full. A path the prefetch list cannot hold (a
// name with a line break) is not recorded: it could not be saved.
func (r *Recorder) Record(p string) {
	p = path.Clean("/" + p)
	if !prefetchlist.Valid(p) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.seen[p]; ok {
		return
	}
	if len(r.paths) >= r.max {
		r.dropped++
		return
	}
	r.seen[p] = struct{}{}
	r.paths = append(r.paths, p)
	r.dirty = true
}

// AddRanges adds byte ranges read of p, a recorded path, to those it has:
// the union, normalized (prefetchlist.Normalize). Ranges of a path not
// recorded (the recorder was full) are dropped, since the trace could not
// name them.
func (r *Recorder) AddRanges(p string, rs []prefetchlist.Range) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.seen[p]; !ok || len(rs) == 0 {
		return
	}
	old := r.ranges[p]
	union := prefetchlist.Normalize(append(slices.Clip(old), rs...))
	if slices.Equal(union, old) {
		return
	}
	if r.ranges == nil {
		r.ranges = map[string][]prefetchlist.Range{}
	}
	r.ranges[p] = union
	r.dirty = true
}

// Ranges returns the byte ranges read of the recorded paths that have any.
func (r *Recorder) Ranges() map[string][]prefetchlist.Range {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.ranges)
}

// Paths returns the recorded paths in order.
func (r *Recorder) Paths() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.paths...)
}

// Dropped returns how many first opens were not recorded because the
// recorder was full.
func (r *Recorder) Dropped() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// snapshot returns the paths, their ranges and whether they changed since
// the last save.
func (r *Recorder) snapshot() ([]string, map[string][]prefetchlist.Range, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.paths...), maps.Clone(r.ranges), r.dirty
}

func (r *Recorder) markSaved() {
	r.mu.Lock()
	r.dirty = false
	r.mu.Unlock()
}

// imageComment starts the comment that names the image in a trace file.
const imageComment = "image: "

// Write writes image's paths in the prefetch-list format (package
// prefetchlist), with a comment naming the image; opts as
// prefetchlist.Write's (prefetchlist.WithRanges for the ranges read).
func Write(w io.Writer, image string, paths []string, opts ...prefetchlist.WriteOption) error {
	comments := []string{"lazysnap trace: files in the order they were first opened after mount", imageComment + image}
	return prefetchlist.Write(w, comments, paths, opts...)
}

// Parsed is what Read found in a trace file.
type Parsed struct {
	Image string   // from the "# image:" comment, if any
	Paths []string // absolute, clean, deduplicated, in order
	// Ranges are the byte ranges read of the large files among Paths
	// (package prefetchlist's "#@ranges" directives); a path without any
	// is to be taken whole.
	Ranges   map[string][]prefetchlist.Range
	Warnings []string // lines skipped, and why
}

// Read parses a trace file with prefetchlist.Read. Lines that name no
// usable path, and repeats, are skipped with a warning rather than failing:
// a damaged trace still yields the good part.
func Read(r io.Reader) (Parsed, error) {
	l, err := prefetchlist.Read(r)
	out := Parsed{Paths: l.Paths, Ranges: l.Ranges}
	for _, c := range l.Comments {
		if img, ok := strings.CutPrefix(c, imageComment); ok {
			out.Image = strings.TrimSpace(img)
		}
	}
	for _, rej := range l.Rejected {
		out.Warnings = append(out.Warnings, rej.String())
	}
	if err != nil {
		return out, fmt.Errorf("reading trace: %w", err)
	}
	return out, nil
}
