package install

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Defaults of the cgroup the supervised mode moves lazysnap into.
const (
	// DefaultCgroupName is the cgroup lazysnap's supervisor (and so serve
	// and fused) runs in on a host without systemd, created below the
	// cgroup of DefaultCgroupParentPID in every hierarchy.
	DefaultCgroupName = "lazysnap"
	// DefaultCgroupParentPID is the process whose cgroup lazysnap's is
	// created in: the host's init, at the top of the node's hierarchy.
	DefaultCgroupParentPID = 1
)

// cgroupLine is one line of /proc/PID/cgroup: a hierarchy (its controllers,
// empty for cgroup v2) and the process's path in it.
type cgroupLine struct {
	id          string
	controllers []string
	path        string
}

// cgroupMount is a mounted cgroup hierarchy: where, the cgroup path its
// root shows, and its controllers (empty for v2).
type cgroupMount struct {
	dir, root   string
	v2          bool
	controllers []string
}

// MoveToOwnCgroup moves process pid into the cgroup name created below the
// cgroup of parentPID, in every hierarchy pid is in (cgroup v2's single
// one, or each v1 hierarchy: memory, pids, cpu, freezer... whatever the
// host mounted), and returns the directories it joined.
//
// Without systemd, the installer's supervisor is started from the
// DaemonSet pod and would otherwise stay in the pod's cgroups: under the
// pod's memory limit, and killed with the pod's processes when the pod is
// deleted or restarted (the runtime kills every process of the container's
// cgroup). In its own cgroup lazysnap outlives the pod, as it does as a
// systemd unit. The cgroups are read and written in parentPID's cgroup
// namespace where this process may enter it: the pod's own namespace would
// show the host's hierarchy relative to the pod, and cgroup v2 mounted with
// nsdelegate forbids moving a process out of its namespace.
func MoveToOwnCgroup(pid int, name string, parentPID int) ([]string, error) {
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return nil, fmt.Errorf("cgroup name %q: %w", name, errdefs.ErrInvalidArgument)
	}
	type result struct {
		dirs []string
		err  error
	}
	done := make(chan result, 1)
	// The namespace is entered by one OS thread, which then dies with this
	// goroutine (it is never unlocked), so no other goroutine runs in it.
	go func() {
		runtime.LockOSThread()
		enterCgroupNamespace(parentPID)
		dirs, err := moveToOwnCgroup(pid, name, parentPID)
		done <- result{dirs, err}
	}()
	r := <-done
	return r.dirs, r.err
}

// enterCgroupNamespace makes the calling thread join parentPID's cgroup
// namespace if it differs. A failure leaves the thread where it was: on a
// cgroup v1 host, or a pod sharing the host's cgroup namespace, that is the
// same one anyway.
func enterCgroupNamespace(parentPID int) {
	target := fmt.Sprintf("/proc/%d/ns/cgroup", parentPID)
	self, err1 := os.Readlink("/proc/thread-self/ns/cgroup")
	theirs, err2 := os.Readlink(target)
	if err1 != nil || err2 != nil || self == theirs {
		return
	}
	fd, err := unix.Open(target, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	_ = unix.Setns(fd, unix.CLONE_NEWCGROUP)
}

func moveToOwnCgroup(pid int, name string, parentPID int) ([]string, error) {
	own, err := readCgroupLines(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	parent, err := readCgroupLines(fmt.Sprintf("/proc/%d/cgroup", parentPID))
	if err != nil {
		return nil, err
	}
	mounts, err := readCgroupMounts("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	var dirs []string
	var errs []error
	for _, l := range own {
		dir, err := joinHierarchy(pid, l, parent, mounts, name)
		switch {
		case err != nil:
			errs = append(errs, err)
		case dir != "":
			dirs = append(dirs, dir)
		}
	}
	if len(dirs) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("no mounted cgroup hierarchy found: %w", errdefs.ErrNotFound))
	}
	return dirs, errors.Join(errs...)
}

// joinHierarchy creates name below parent's cgroup in l's hierarchy and
// moves pid there; "" when the hierarchy is not mounted here.
func joinHierarchy(pid int, l cgroupLine, parent []cgroupLine, mounts []cgroupMount, name string) (string, error) {
	m, ok := findMount(l, mounts)
	if !ok {
		return "", nil
	}
	base := ""
	for _, p := range parent {
		if p.id == l.id {
			base = p.path
		}
	}
	rel, ok := strings.CutPrefix(base, m.root)
	if !ok || strings.Contains(base, "..") {
		return "", fmt.Errorf("cgroup %s of the parent is outside the mount at %s: %w", base, m.dir, errdefs.ErrFailedPrecondition)
	}
	dir := filepath.Join(m.dir, rel, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("creating cgroup: %w", err)
	}
	if slices.Contains(m.controllers, "cpuset") {
		// A v1 cpuset cgroup takes no process until it has CPUs and
		// memory nodes: those of its parent.
		if err := inheritCpuset(dir); err != nil {
			return "", err
		}
	}
	procs := filepath.Join(dir, "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return "", fmt.Errorf("moving %d into %s: %w", pid, dir, err)
	}
	return dir, nil
}

func inheritCpuset(dir string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("reading %s: %w", f, err)
		}
		if strings.TrimSpace(string(cur)) != "" {
			continue
		}
		val, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
		if err != nil {
			return fmt.Errorf("reading parent's %s: %w", f, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), val, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", f, err)
		}
	}
	return nil
}

func findMount(l cgroupLine, mounts []cgroupMount) (cgroupMount, bool) {
	for _, m := range mounts {
		if len(l.controllers) == 0 && m.v2 {
			return m, true
		}
		if len(l.controllers) > 0 && !m.v2 && containsAll(m.controllers, l.controllers) {
			return m, true
		}
	}
	return cgroupMount{}, false
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func readCgroupLines(path string) ([]cgroupLine, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading cgroups: %w", err)
	}
	var lines []cgroupLine
	for _, s := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(s, ":", 3)
		if len(parts) != 3 {
			continue
		}
		l := cgroupLine{id: parts[0], path: parts[2]}
		if parts[1] != "" {
			l.controllers = strings.Split(parts[1], ",")
		}
		lines = append(lines, l)
	}
	return lines, nil
}

// readCgroupMounts parses mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT
// OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS".
func readCgroupMounts(path string) ([]cgroupMount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	var mounts []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || len(fields) < sep+4 {
			continue
		}
		m := cgroupMount{root: unescapeMountinfo(fields[3]), dir: unescapeMountinfo(fields[4])}
		switch fields[sep+1] {
		case "cgroup2":
			m.v2 = true
		case "cgroup":
			m.controllers = strings.Split(fields[sep+3], ",")
		default:
			continue
		}
		mounts = append(mounts, m)
	}
	return mounts, sc.Err()
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
