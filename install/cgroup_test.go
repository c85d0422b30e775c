package install

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// mountinfoFixture is this kind of host's cgroup mounts (cgroup v1 with
// v2's unified hierarchy beside), plus one mount point with a space and a
// bind of a sub-cgroup, which must be told apart by its root.
const mountinfoFixture = `25 1 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
27 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
28 25 0:26 / /sys/fs/cgroup/name\040d rw,relatime - cgroup cgroup rw,name=systemd
29 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
30 1 0:28 / /proc rw - proc proc rw
`

func TestReadCgroupMounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(path, []byte(mountinfoFixture), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readCgroupMounts(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []cgroupMount{
		{dir: "/sys/fs/cgroup/cpu,cpuacct", root: "/", controllers: []string{"rw", "cpu", "cpuacct"}},
		{dir: "/sys/fs/cgroup/memory", root: "/", controllers: []string{"rw", "memory"}},
		{dir: "/sys/fs/cgroup/name d", root: "/", controllers: []string{"rw", "name=systemd"}},
		{dir: "/sys/fs/cgroup/unified", root: "/", v2: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("mounts = %+v\nwant %+v", got, want)
	}
	for _, tc := range []struct {
		line cgroupLine
		dir  string
	}{
		{cgroupLine{id: "2", controllers: []string{"cpu", "cpuacct"}}, "/sys/fs/cgroup/cpu,cpuacct"},
		{cgroupLine{id: "4", controllers: []string{"memory"}}, "/sys/fs/cgroup/memory"},
		{cgroupLine{id: "9", controllers: []string{"name=systemd"}}, "/sys/fs/cgroup/name d"},
		{cgroupLine{id: "0"}, "/sys/fs/cgroup/unified"},
		{cgroupLine{id: "7", controllers: []string{"pids"}}, ""},
	} {
		m, ok := findMount(tc.line, got)
		if ok != (tc.dir != "") || m.dir != tc.dir {
			t.Errorf("hierarchy %v: mount %q (found %v), want %q", tc.line.controllers, m.dir, ok, tc.dir)
		}
	}
}

// TestJoinHierarchyPaths checks where lazysnap's cgroup goes: below the
// parent process's cgroup, relative to the mount's root, in a directory
// tree standing in for a cgroup file system.
func TestJoinHierarchyPaths(t *testing.T) {
	fsRoot := t.TempDir()
	mounts := []cgroupMount{{dir: filepath.Join(fsRoot, "memory"), root: "/", controllers: []string{"rw", "memory"}}}
	if err := os.MkdirAll(filepath.Join(fsRoot, "memory/node/init"), 0o755); err != nil {
		t.Fatal(err)
	}
	own := cgroupLine{id: "4", controllers: []string{"memory"}, path: "/kubepods/pod1/ctr"}
	parent := []cgroupLine{{id: "4", controllers: []string{"memory"}, path: "/node/init"}}
	dir, err := joinHierarchy(4242, own, parent, mounts, "lazysnap")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(fsRoot, "memory/node/init/lazysnap"); dir != want {
		t.Errorf("joined %s, want %s", dir, want)
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil || strings.TrimSpace(string(procs)) != "4242" {
		t.Errorf("cgroup.procs = %q, %v; want the PID", procs, err)
	}
	parent[0].path = "/../outside"
	if _, err := joinHierarchy(4242, own, parent, mounts, "lazysnap"); err == nil {
		t.Error("joined a cgroup outside the mount")
	}
}

func TestMoveToOwnCgroupRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b"} {
		if _, err := MoveToOwnCgroup(os.Getpid(), name, 1); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
}
