package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// Footprint records what a run created on the machine (namespaces,
// directories, processes), so that a test can check teardown left nothing.
type Footprint struct {
	mu         sync.Mutex
	namespaces []string
	dirs       []string // private directories; mounts below them must go
	markers    []string // strings on the command lines of processes started
	pids       []int    // container processes
}

func (f *Footprint) addNamespace(ns string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.namespaces = append(f.namespaces, ns)
}

func (f *Footprint) addDirs(dirs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dirs = append(f.dirs, dirs...)
	f.markers = append(f.markers, dirs...)
}

func (f *Footprint) addMarkers(markers ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.markers = append(f.markers, markers...)
}

func (f *Footprint) addPID(pid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pids = append(f.pids, pid)
}

// addNode records a case's containerd: its base dir (config, root, the
// lazysnap root), run dir (sockets, state, runc root) and address (on the
// shims' command lines).
func (f *Footprint) addNode(cd *testenv.Containerd) {
	f.addDirs(filepath.Dir(cd.Root), cd.RunDir())
	f.addMarkers(cd.Address)
}

// Leftovers describes what is still there: mounts below the private
// directories, network namespaces, and processes. Empty means clean.
func (f *Footprint) Leftovers() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var left []string
	mounts, err := testenv.MountPoints()
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		if under(m, f.dirs) {
			left = append(left, "mount "+m)
		}
	}
	nss, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	for _, ns := range f.namespaces {
		if strings.Contains(string(nss), ns) {
			left = append(left, "network namespace "+ns)
		}
	}
	for _, pid := range testenv.ProcessesMentioning(f.markers...) {
		left = append(left, fmt.Sprintf("process %d", pid))
	}
	for _, pid := range f.pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			left = append(left, fmt.Sprintf("container process %d", pid))
		}
	}
	return left, nil
}

func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}
