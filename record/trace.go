package record

import (
	"fmt"
	"io"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// Trace is the ordered list of the image files a workload opened: absolute,
// clean paths, in order of first open, each once.
type Trace []string

// WriteTo writes t as a prefetch list (package prefetchlist), preceded by a
// comment line saying what it is.
func (t Trace) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	comment := fmt.Sprintf("lazysnap access trace: %d files in first-open order", len(t))
	if err := prefetchlist.Write(cw, []string{comment}, t); err != nil {
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
