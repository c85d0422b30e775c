package record

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// maxLineLength bounds one line of a list; Linux paths are at most 4096 bytes.
const maxLineLength = 64 << 10

// Trace is the ordered list of the image files a workload opened: absolute,
// clean paths, in order of first open, each once.
type Trace []string

// WriteTo writes t in the list format (see the package documentation),
// preceded by a comment line saying what it is.
func (t Trace) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	var n int64
	count := func(k int, err error) error {
		n += int64(k)
		return err
	}
	if err := count(fmt.Fprintf(bw, "# lazysnap access trace: %d files in first-open order\n", len(t))); err != nil {
		return n, fmt.Errorf("writing trace: %w", err)
	}
	for _, p := range t {
		if err := count(bw.WriteString(p + "\n")); err != nil {
			return n, fmt.Errorf("writing trace: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("writing trace: %w", err)
	}
	return n, nil
}

// Rejected is a line of a list that names no usable path.
type Rejected struct {
	Line   int // 1-based
	Text   string
	Reason string
}

// ParseList reads a list in the list format. Lines that cannot name a file
// of the image (a path with a ".." component, which a list written from a
// real root filesystem never holds, or "/" itself) are not in the returned
// Trace but in rejected, so that a caller can warn and go on. Later
// duplicates of a path are dropped. The error is only for reading r.
func ParseList(r io.Reader) (t Trace, rejected []Rejected, err error) {
	seen := make(map[string]bool)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLineLength)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, reason := cleanListPath(line)
		if reason != "" {
			rejected = append(rejected, Rejected{Line: n, Text: line, Reason: reason})
			continue
		}
		if !seen[p] {
			seen[p] = true
			t = append(t, p)
		}
	}
	if err := sc.Err(); err != nil {
		return t, rejected, fmt.Errorf("reading list: %w", err)
	}
	return t, rejected, nil
}

// cleanListPath returns p as an absolute clean path, or why it names no file.
func cleanListPath(p string) (clean, reason string) {
	for _, elem := range strings.Split(p, "/") {
		if elem == ".." {
			return "", `has a ".." component`
		}
	}
	clean = path.Clean("/" + p)
	if clean == "/" {
		return "", "names the root directory"
	}
	return clean, ""
}

// listable reports whether p survives a round trip through the list format.
func listable(p string) bool {
	if p == "" || strings.ContainsAny(p, "\n\r") {
		return false
	}
	// Readers trim white space around a line.
	return strings.TrimSpace(p) == p
}
