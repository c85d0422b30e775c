package record

import (
	"fmt"
	"io"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// Trace is what a workload read of the image.
type Trace struct {
	// Paths are the image files it opened: absolute, clean paths, in order
	// of first open, each once.
	Paths []string
	// Ranges are, for some of the files of at least
	// prefetchlist.RangedMinSize (keyed by path, one of Paths), the byte
	// ranges of them it read, page aligned and widened by the kernel's
	// read-ahead (see WithReadRanges). A file without ranges is taken
	// whole. Nil when no file has any.
	Ranges map[string][]prefetchlist.Range
}

// WriteTo writes t as a prefetch list (package prefetchlist), each file's
// ranges in a "#@ranges" directive after it, preceded by a comment line
// saying what it is.
func (t Trace) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	comment := fmt.Sprintf("lazysnap access trace: %d files in first-open order", len(t.Paths))
	if err := prefetchlist.Write(cw, []string{comment}, t.Paths, prefetchlist.WithRanges(t.Ranges)); err != nil {
		return cw.n, fmt.Errorf("writing trace: %w", err)
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n += int64(k)
	return k, err
}
