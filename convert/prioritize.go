package convert

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// ReadPrioritized reads a list of prioritized files: one path per line, in
// the order a workload reads them, absolute or relative to the root ("/usr/bin/sh"
// and "usr/bin/sh" are the same file). Blank lines and lines starting with
// "#" are ignored, as is surrounding whitespace. lazysnap's access trace
// export writes this format.
func ReadPrioritized(r io.Reader) ([]string, error) {
	var paths []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		paths = append(paths, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading prioritized files: %w", err)
	}
	return paths, nil
}
