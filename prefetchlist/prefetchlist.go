// Package prefetchlist reads and writes the prefetch list: the files of an
// image in the order a workload first opens them. `lazyconv optimize` and
// lazysnap's traces (fs/trace) write it; `lazyconv convert --prioritize`
// reads it and puts those files first. It imports no other lazysnap package,
// so that the leaf packages that need the format (convert) may use it.
//
// # Format
//
// Text, one entry per line ('\n'; a '\r' before it is white space):
//
//	# lazysnap trace: comments start with '#'
//	/bin/busybox
//	/etc/app config.yaml
//	usr/lib/libc.so.6
//
// Rules:
//
//   - White space around a line is ignored. Blank lines are ignored; lines
//     whose first other character is '#' are comments (Read returns their
//     text, which is how a trace names its image).
//   - Every other line is a path of the image's root filesystem, in access
//     order. A relative path is read from the root ("usr/bin/sh" is
//     "/usr/bin/sh"), and every path is cleaned ("//etc//hosts/" is
//     "/etc/hosts"), so lists written by hand or by older tools keep working.
//   - A path with a ".." component, the root itself or a NUL byte is
//     rejected: a list taken from a real root filesystem never holds one, and
//     resolving ".." without the image's symlinks could name another file.
//   - A path that repeats an earlier one (after cleaning) is dropped: only
//     the first open counts.
//
// # Ranges
//
// A path line may be followed by a directive giving the byte ranges of
// that file the workload read, so that a prefetch may take only those:
//
//	/usr/lib/jvm/lib/modules
//	#@ranges 0-4194304,20971520-29360128
//
// Rules:
//
//   - Ranges are half-open [START,END), in decimal, sorted, disjoint and
//     non-empty; ranges that touch are merged. More than MaxRanges are
//     coalesced across their smallest gaps.
//   - The directive belongs to the path on the line before it (blank lines
//     aside). One after anything else (a comment, a rejected or repeated
//     path, another directive) and a malformed one are rejected by line
//     number; the path then keeps no ranges and is taken whole.
//   - A path without a directive is taken whole. Readers that predate
//     directives see a comment, and so take every file whole: the safe
//     fallback. Other lines starting "#@" are comments, kept for later
//     directives.
//
// Rejected and repeated lines are returned, with their line number, next
// to the good paths rather than failing the read, so that a damaged list
// still yields its good part.
//
// There is no escaping: a path that would not read back as itself (one
// holding a newline, a carriage return or a NUL byte, starting or ending
// in white space, or not absolute and clean) cannot be written, so a file
// name can never inject a line. Write refuses such a path, and recorders
// skip it (see Valid).
package prefetchlist

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/containerd/errdefs"
)

// MaxLine bounds one line of a list: a Linux path is at most 4 KiB, so a
// longer line is damage, not a path.
const MaxLine = 64 << 10

// List is what Read found.
type List struct {
	// Paths are absolute and clean, each once, in list order.
	Paths []string
	// Comments are the comment lines' text after the '#', trimmed.
	Comments []string
	// Ranges are the byte ranges read of the paths that have a directive,
	// keyed by path (one of Paths), sorted, disjoint, at most MaxRanges.
	// Paths without ranges are taken whole. Nil when no path has any.
	Ranges map[string][]Range
	// Rejected are the lines that named no usable path, or a repeated one,
	// and the directives that were malformed or followed no path.
	Rejected []Rejected
}

// Rejected is a line of a list that Read did not take.
type Rejected struct {
	Line   int // 1-based
	Text   string
	Reason string
}

func (r Rejected) String() string {
	return fmt.Sprintf("line %d: %q %s; skipped", r.Line, r.Text, r.Reason)
}

// Read parses a list. It fails only when r fails or a line is longer than
// MaxLine (wrapping errdefs.ErrInvalidArgument), and then returns what it
// read before.
func Read(r io.Reader) (List, error) {
	var out List
	seen := make(map[string]bool)
	last := "" // the path accepted on the line before, blank lines aside
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		prev := last
		if line != "" {
			last = ""
		}
		switch {
		case line == "":
		case isDirective(line):
			out.readDirective(n, line, prev)
		case strings.HasPrefix(line, "#"):
			out.Comments = append(out.Comments, strings.TrimSpace(line[1:]))
		default:
			p, reason := cleanPath(line)
			if reason == "" && seen[p] {
				reason = "repeats an earlier path"
			}
			if reason != "" {
				out.reject(n, line, reason)
				continue
			}
			seen[p] = true
			out.Paths = append(out.Paths, p)
			last = p
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("reading a prefetch list: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return out, nil
}

// readDirective takes the ranges of directive line n for path, the path
// on the line before it ("" for none).
func (l *List) readDirective(n int, line, path string) {
	if path == "" {
		l.reject(n, line, "follows no path")
		return
	}
	rs, reason := parseRanges(line)
	if reason != "" {
		l.reject(n, line, reason)
		return
	}
	if l.Ranges == nil {
		l.Ranges = map[string][]Range{}
	}
	l.Ranges[path] = rs
}

func (l *List) reject(n int, line, reason string) {
	l.Rejected = append(l.Rejected, Rejected{Line: n, Text: line, Reason: reason})
}

// cleanPath returns line as an absolute clean path, or why it names no file.
func cleanPath(line string) (clean, reason string) {
	if strings.ContainsRune(line, 0) {
		return "", "holds a NUL byte"
	}
	for _, elem := range strings.Split(line, "/") {
		if elem == ".." {
			return "", `has a ".." component`
		}
	}
	clean = path.Clean("/" + line)
	if clean == "/" {
		return "", "names the root directory"
	}
	return clean, ""
}

// Valid reports whether p can be written: whether Read gives p back as it
// is. Recorders skip the paths it refuses.
func Valid(p string) bool {
	if p == "" || strings.ContainsAny(p, "\n\r") || strings.TrimSpace(p) != p {
		return false
	}
	clean, reason := cleanPath(p)
	return reason == "" && clean == p
}

// WriteOption is an option of Write.
type WriteOption func(*writeOptions)

type writeOptions struct {
	ranges map[string][]Range
}

func defaultWriteOptions() writeOptions {
	return writeOptions{} // The default writes no ranges: every file is taken whole.
}

// WithRanges writes, after each path that has some, the byte ranges of
// it that were read (a "#@ranges" directive), normalized (see Normalize).
// Every key must be one of the paths written. The default writes none.
func WithRanges(ranges map[string][]Range) WriteOption {
	return func(o *writeOptions) { o.ranges = ranges }
}

// Write writes comments, then paths, in the list format. It refuses, with
// errdefs.ErrInvalidArgument and before writing anything, a path Valid
// refuses and a comment holding a line break, since either would change
// the lines a reader sees, and ranges that are negative or empty or name a
// path not written.
func Write(w io.Writer, comments, paths []string, opts ...WriteOption) error {
	o := defaultWriteOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := checkWrite(comments, paths, o.ranges); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	for _, c := range comments {
		bw.WriteString("# " + c + "\n")
	}
	for _, p := range paths {
		bw.WriteString(p + "\n")
		if rs := Normalize(o.ranges[p]); len(rs) > 0 {
			bw.WriteString(formatRanges(rs) + "\n")
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing a prefetch list: %w", err)
	}
	return nil
}

// checkWrite returns why Write cannot write its arguments, or nil.
func checkWrite(comments, paths []string, ranges map[string][]Range) error {
	for _, c := range comments {
		if strings.ContainsAny(c, "\n\r") {
			return fmt.Errorf("prefetch list comment %q holds a line break: %w", c, errdefs.ErrInvalidArgument)
		}
	}
	listed := make(map[string]bool, len(paths))
	for _, p := range paths {
		if !Valid(p) {
			return fmt.Errorf("path %q cannot be written in a prefetch list: %w", p, errdefs.ErrInvalidArgument)
		}
		listed[p] = true
	}
	for p, rs := range ranges {
		if !listed[p] {
			return fmt.Errorf("ranges of %q, a path not in the prefetch list: %w", p, errdefs.ErrInvalidArgument)
		}
		if why := validRanges(rs); why != "" {
			return fmt.Errorf("ranges of %q: %s: %w", p, why, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
