// Package trace records, per image, the order in which its files are first
// opened after mount, and stores it as a prefetch list: one absolute path per
// line, "#" comments allowed, which is what `lazyconv convert --prioritize`
// reads. Recording is cheap and bounded: the FUSE side reports each file of
// a layer once (see fs/node), and a Recorder keeps at most a fixed number of
// paths.
package trace

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
)

// Recorder records the first-open order of one image's files. It is safe
// for concurrent use.
type Recorder struct {
	image string
	max   int

	mu      sync.Mutex
	seen    map[string]struct{}
	paths   []string
	dropped int64 // paths not recorded because the recorder was full
	dirty   bool  // recorded since the last MarkSaved
}

// NewRecorder returns an empty Recorder for image keeping at most maxPaths
// paths (at least 1).
func NewRecorder(image string, maxPaths int) *Recorder {
	return &Recorder{image: image, max: max(1, maxPaths), seen: map[string]struct{}{}}
}

// Image returns the image the recorder is for.
func (r *Recorder) Image() string { return r.image }

// Record appends path (made absolute and clean) unless it was recorded
// already or the recorder is full.
func (r *Recorder) Record(p string) {
	p = path.Clean("/" + p)
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

// snapshot returns the paths and whether they changed since the last save.
func (r *Recorder) snapshot() ([]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.paths...), r.dirty
}

func (r *Recorder) markSaved() {
	r.mu.Lock()
	r.dirty = false
	r.mu.Unlock()
}

// imageHeader starts the comment that names the image in a trace file.
const imageHeader = "# image: "

// Write writes image's paths in the prefetch-list format.
func Write(w io.Writer, image string, paths []string) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# lazysnap trace: files in the order they were first opened after mount\n")
	fmt.Fprintf(bw, "%s%s\n", imageHeader, image)
	for _, p := range paths {
		bw.WriteString(p)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// Parsed is what Read found in a trace file.
type Parsed struct {
	Image    string   // from the "# image:" comment, if any
	Paths    []string // absolute, clean, deduplicated, in order
	Warnings []string // lines skipped, and why
}

// maxLine bounds one line of a trace file: a path is at most 4 KiB on Linux.
const maxLine = 64 << 10

// Read parses a prefetch list. Lines that are not absolute paths, and
// repeats, are skipped with a warning rather than failing: a damaged trace
// still yields the good part. It fails only when r fails.
func Read(r io.Reader) (Parsed, error) {
	var out Parsed
	seen := map[string]struct{}{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, imageHeader):
			out.Image = strings.TrimSpace(strings.TrimPrefix(line, imageHeader))
		case line == "" || strings.HasPrefix(line, "#"):
		case !strings.HasPrefix(line, "/") || strings.ContainsRune(line, 0):
			out.Warnings = append(out.Warnings, fmt.Sprintf("line %d: %q is no absolute path; skipped", n, line))
		default:
			p := path.Clean(line)
			if _, dup := seen[p]; dup {
				out.Warnings = append(out.Warnings, fmt.Sprintf("line %d: %s repeated; skipped", n, p))
				continue
			}
			seen[p] = struct{}{}
			out.Paths = append(out.Paths, p)
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("reading trace: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return out, nil
}
