package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestFusedKilledWhileContainerReads SIGKILLs `lazysnap fused` while a
// container reads lazily mounted files: with handover (the default) serve
// holds every mount's FUSE connection, starts fused again, and the new
// fused resumes the mounts, so the container's reads, half of them first
// reads that must reach fused, all return the right content.
func TestFusedKilledWhileContainerReads(t *testing.T) {
	e := startLazyEnv(t)
	testFusedReplaced(t, e, "kill", func(pid int) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFusedKilledAfterServeRestart: a serve started while fused runs
// collects the connections of every mount from it, so a fused killed after
// a serve restart hands its mounts over as well.
func TestFusedKilledAfterServeRestart(t *testing.T) {
	e := startLazyEnv(t)
	testFusedReplaced(t, e, "serve-restart", func(pid int) {
		e.ls.Kill()
		e.ls.Restart()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFusedUpgradedWhileContainerReads replaces the lazysnap binary on disk
// by another build and stops fused with SIGTERM, as an upgrade does: serve
// starts the new binary's fused, which resumes the mounts; the container
// reading meanwhile sees no error.
func TestFusedUpgradedWhileContainerReads(t *testing.T) {
	e, bin, next := startUpgradableEnv(t)
	testFusedReplaced(t, e, "upgrade", func(pid int) {
		if err := os.Rename(next, bin); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	})
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), "after-upgrade") {
		t.Fatalf("the binary on disk says %q (%v)", out, err)
	}
}

// TestUpgradeByRestartingServe upgrades as an installer or systemd does:
// the new binary is renamed over the old one and only serve is restarted.
// The new serve takes every mount's connection from the old fused, sees
// that fused runs another binary, and replaces it; the container reading
// meanwhile sees no error, and the fused then running is the new build.
func TestUpgradeByRestartingServe(t *testing.T) {
	e, bin, next := startUpgradableEnv(t)
	testFusedReplaced(t, e, "serve-upgrade", func(int) {
		if err := os.Rename(next, bin); err != nil {
			t.Fatal(err)
		}
		e.ls.Kill()
		e.ls.Restart()
	})
	pid := e.ls.FusedPID()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || exe != bin {
		t.Fatalf("fused %d runs %q (%v), want the upgraded %s", pid, exe, err, bin)
	}
}

// startUpgradableEnv starts the lazy-pull stack with serve running bin, a
// build of lazysnap of its own, and builds next, another build, for the
// test to rename over bin as an upgrade does.
func startUpgradableEnv(t *testing.T) (e *lazyEnv, bin, next string) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), "lazysnap")
	buildLazysnap(t, bin, "before-upgrade")
	e = newLazyEnv(t)
	opts := []testenv.ContainerdOption{testenv.WithLazysnap(),
		testenv.WithRegistryHost(e.reg.Host), testenv.WithRegistryHost(e.proxy.Host)}
	e.cd = testenv.StartContainerd(t, opts...)
	e.ls = testenv.StartLazysnap(t, e.cd, testenv.WithLazysnapConfig(lazysnapConfig(e.cd)), testenv.WithLazysnapBinary(bin))
	next = bin + ".next"
	buildLazysnap(t, next, "after-upgrade")
	return e, bin, next
}

// testFusedReplaced runs a container that hashes the image's files, pauses
// halfway, has replace end the running fused, lets the container go on
// while a new fused comes up, and checks every sum.
func testFusedReplaced(t *testing.T, e *lazyEnv, name string, replace func(pid int)) {
	img := testenv.BuildImage(t, e.reg, "handover-"+name+":gzip", smallImageLayers()...)
	ref := testenv.RefVia(e.convert(t, img, "handover-"+name+":esgz"), e.proxy.Host)
	e.lazysnapPull(t, ref)

	out := t.TempDir()
	half := strings.Count(img.Listing("/data"), "\n") / 2
	args := e.cd.RunFlags("lazysnap", append([]string{"--detach"}, testenv.BindMount(out, "/out")...)...)
	args = append(args, ref, "reader", "/bin/sh", "-c", fmt.Sprintf(restartScript, half))
	e.cd.MustCtr(t, args...)

	waitForFile(t, filepath.Join(out, "phase1"))
	old := e.ls.FusedPID()
	if old == 0 {
		t.Fatal("no fused runs")
	}
	mountsBefore := len(lazyMounts(t, e.ls.Root))
	start := time.Now()
	replace(old)
	// The container goes on at once: its reads wait for the next fused.
	if err := os.WriteFile(filepath.Join(out, "resume"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitForFile(t, filepath.Join(out, "done"))
	t.Logf("%s: the container read the second half of the files (first reads) %v after the replacement began", name, time.Since(start).Round(time.Millisecond))

	sums, err := os.ReadFile(filepath.Join(out, "sums"))
	if err != nil {
		t.Fatal(err)
	}
	assertListing(t, img, "/data", string(sums))
	// The replacement is asynchronous: the container may finish first when
	// its remaining files are local already (in the spool that the mount's
	// tail and read-ahead filled), so wait for it.
	deadline := time.Now().Add(15 * time.Second)
	pid := e.ls.FusedPID()
	for (pid == 0 || pid == old) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		pid = e.ls.FusedPID()
	}
	if pid == 0 || pid == old {
		t.Errorf("fused %d still runs, or none (%d)", old, pid)
	}
	if n := len(lazyMounts(t, e.ls.Root)); n != mountsBefore {
		t.Errorf("%d lazy mounts after fused was replaced, %d before", n, mountsBefore)
	}
}

// buildLazysnap builds the lazysnap command to path, naming the build.
func buildLazysnap(t *testing.T, path, version string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", path, "./cmd/lazysnap")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building lazysnap: %v\n%s", err, out)
	}
}
