package integration

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/install"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// podRunner runs the installer's host commands the way the DaemonSet pod
// does, but from a cgroup standing in for the pod's: each command starts
// blocked, is moved into the pod's cgroups (every hierarchy), and only then
// runs.
type podRunner struct {
	pod string // cgroup name, below the test process's cgroups
}

func (r podRunner) Run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", `read _; exec "$@"`, "sh", name}, args...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	if _, err := install.MoveToOwnCgroup(cmd.Process.Pid, r.pod, os.Getpid()); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("moving %s into the pod's cgroup: %w", name, err)
	}
	fmt.Fprintln(stdin)
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s %v: %w: %s", name, args, err, out)
	}
	return nil
}

// TestSupervisedLazysnapOutlivesPod installs lazysnap on a host without
// systemd (this one) from a "pod": a cgroup of its own in every hierarchy,
// as a container's. The supervisor moves itself, and so serve and fused,
// into a cgroup of lazysnap's own; killing every process of the pod's
// cgroups (what the runtime does when the pod is deleted) leaves lazysnap
// serving. The cgroups nest below the test process's own.
func TestSupervisedLazysnapOutlivesPod(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireFUSE(t)
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("host runs systemd: lazysnap runs as a unit there, in its own cgroup")
	}
	dir := t.TempDir()
	tag := strconv.Itoa(os.Getpid())
	pod, own := "lazysnap-test-pod-"+tag, "lazysnap-test-"+tag
	runner := podRunner{pod: pod}
	// A long-lived pod process, like the installer's health server.
	podInit := exec.Command("sleep", "1000")
	testenv.StartProcess(t, "pod init", podInit)
	podDirs, err := install.MoveToOwnCgroup(podInit.Process.Pid, pod, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod cgroups: %v", podDirs)

	writeFile(t, filepath.Join(dir, "etc/containerd/config.toml"), "version = 3\n")
	inst := install.New(
		install.WithHostRoot("/"),
		install.WithContainerdConfig(filepath.Join(dir, "etc/containerd/config.toml")),
		install.WithBinDir(filepath.Join(dir, "bin")),
		install.WithConfigDir(filepath.Join(dir, "etc/lazysnap")),
		install.WithRootDir(filepath.Join(dir, "root")),
		install.WithSocket(filepath.Join(dir, "run/lazysnap.sock")),
		install.WithUnitDir(filepath.Join(dir, "units")),
		install.WithSupervisorLog(filepath.Join(dir, "lazysnap.log")),
		install.WithDaemonBinary(testenv.LazysnapBin()),
		install.WithInstallerBinary(filepath.Join(testenv.RepoRoot(), "bin", "lazysnap-install")),
		install.WithCgroup(own, os.Getpid()),
		install.WithRunner(runner),
		install.WithLogger(slog.New(slog.DiscardHandler)),
	)
	t.Cleanup(func() { cleanupSupervised(t, inst, dir, podDirs, own) })
	if _, err := inst.Install(context.Background()); err != nil {
		t.Fatal(err)
	}
	health := install.NewHealth(filepath.Join(dir, "run/lazysnap.sock"), filepath.Join(dir, "root/fused.sock"))
	waitHealthy(t, health, dir)

	procs := lazysnapProcesses(t, dir)
	for role, pid := range procs {
		assertOwnCgroup(t, role, pid, pod, own)
	}
	killCgroup(t, podDirs)
	time.Sleep(time.Second) // let any signal land
	for role, pid := range procs {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Errorf("%s (pid %d) died with the pod: %v", role, pid, err)
		}
	}
	if err := health.Check(context.Background()); err != nil {
		t.Errorf("lazysnap after the pod was killed: %v", err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitHealthy(t *testing.T, h *install.Health, dir string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := h.Check(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "lazysnap.log"))
			t.Fatalf("lazysnap did not become healthy: %v\n%s", err, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lazysnapProcesses finds the supervisor, serve and fused of the install
// in dir by their command lines.
func lazysnapProcesses(t *testing.T, dir string) map[string]int {
	t.Helper()
	found := map[string]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) < 2 || !strings.HasPrefix(args[0], dir) {
			continue
		}
		found[filepath.Base(args[0])+" "+args[1]] = pid
	}
	for _, want := range []string{"lazysnap-install supervise", "lazysnap serve", "lazysnap fused"} {
		if found[want] == 0 {
			t.Fatalf("no %s process found; found %v", want, found)
		}
	}
	return found
}

// assertOwnCgroup checks that pid is in lazysnap's cgroup, not the pod's,
// in every hierarchy.
func assertOwnCgroup(t *testing.T, role string, pid int, pod, own string) {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if strings.Contains(line, pod) || !strings.HasSuffix(line, "/"+own) {
			t.Errorf("%s (pid %d) cgroup %q: want lazysnap's own (%s), not the pod's", role, pid, line, own)
		}
	}
}

// killCgroup SIGKILLs every process of the pod's cgroups, as the runtime
// does when it stops a container.
func killCgroup(t *testing.T, dirs []string) {
	t.Helper()
	for _, d := range dirs {
		raw, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Fields(string(raw)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// cleanupSupervised uninstalls, stops fused (which uninstall leaves
// holding its mounts) and removes the test's cgroups.
func cleanupSupervised(t *testing.T, inst *install.Installer, dir string, podDirs []string, own string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := inst.Uninstall(ctx); err != nil {
		t.Logf("uninstall: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := remainingProcesses(dir)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = testenv.UnmountUnder(filepath.Join(dir, "root"))
	for _, d := range podDirs {
		_ = os.Remove(filepath.Join(filepath.Dir(d), own))
		_ = os.Remove(d)
	}
}

func remainingProcesses(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.HasPrefix(string(raw), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}
