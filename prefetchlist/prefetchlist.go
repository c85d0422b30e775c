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
	// Rejected are the lines that named no usable path, or a repeated one.
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
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#"):
			out.Comments = append(out.Comments, strings.TrimSpace(line[1:]))
		default:
			p, reason := cleanPath(line)
			if reason == "" && seen[p] {
				reason = "repeats an earlier path"
			}
			if reason != "" {
				out.Rejected = append(out.Rejected, Rejected{Line: n, Text: line, Reason: reason})
				continue
			}
			seen[p] = true
			out.Paths = append(out.Paths, p)
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("reading a prefetch list: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return out, nil
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

// Write writes comments, then paths, in the list format. It refuses, with
// errdefs.ErrInvalidArgument and before writing anything, a path Valid
// refuses and a comment holding a line break, since either would change
// the lines a reader sees.
func Write(w io.Writer, comments, paths []string) error {
	for _, c := range comments {
		if strings.ContainsAny(c, "\n\r") {
			return fmt.Errorf("prefetch list comment %q holds a line break: %w", c, errdefs.ErrInvalidArgument)
		}
	}
	for _, p := range paths {
		if !Valid(p) {
			return fmt.Errorf("path %q cannot be written in a prefetch list: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	bw := bufio.NewWriter(w)
	for _, c := range comments {
		bw.WriteString("# " + c + "\n")
	}
	for _, p := range paths {
		bw.WriteString(p + "\n")
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing a prefetch list: %w", err)
	}
	return nil
}
