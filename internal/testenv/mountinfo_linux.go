package testenv

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
)

// UnmountUnder lazily unmounts every mount at or below any of dirs, deepest
// first, so a dead test daemon leaves no overlay or FUSE mount behind.
func UnmountUnder(dirs ...string) error {
	mounts, err := MountPoints()
	if err != nil {
		return err
	}
	var targets []string
	for _, m := range mounts {
		for _, d := range dirs {
			if m == d || strings.HasPrefix(m, d+"/") {
				targets = append(targets, m)
				break
			}
		}
	}
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	var firstErr error
	for _, m := range targets {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("unmounting %s: %w", m, err)
		}
	}
	return firstErr
}

// MountPoints returns the mount points of /proc/self/mountinfo.
func MountPoints() ([]string, error) {
	infos, err := MountInfo()
	if err != nil {
		return nil, err
	}
	points := make([]string, len(infos))
	for i, m := range infos {
		points[i] = m.MountPoint
	}
	return points, nil
}

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	MountPoint string
	FSType     string
	Source     string
}

// MountInfo parses /proc/self/mountinfo.
func MountInfo() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	defer f.Close()
	var mounts []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m, ok := parseMountInfoLine(sc.Text()); ok {
			mounts = append(mounts, m)
		}
	}
	return mounts, sc.Err()
}

// parseMountInfoLine reads "ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS] - TYPE SOURCE SUPER".
func parseMountInfoLine(line string) (Mount, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" {
			sep = i
			break
		}
	}
	if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
		return Mount{}, false
	}
	return Mount{
		MountPoint: unescapeOctal(fields[4]),
		FSType:     fields[sep+1],
		Source:     unescapeOctal(fields[sep+2]),
	}, true
}

// unescapeOctal undoes mountinfo's \040-style escapes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
