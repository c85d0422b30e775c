package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// rebootConfig makes serve retry layers a restart could not mount every
// second instead of every 30 s, so the test waits for the retry, not for
// the default.
const rebootConfig = "[restore]\ntimeout = \"10s\"\nretry_interval = \"1s\"\n"

// faultEnv is the lazy-pull stack with a fault proxy between lazysnap and
// the registry: images are pulled through it, so a test can take the
// registry away.
type faultEnv struct {
	lazyEnv
	faults *testenv.FaultProxy
}

func startFaultEnv(t *testing.T, extraConfig string, opts ...testenv.ContainerdOption) *faultEnv {
	t.Helper()
	return startFaultEnvWith(t, extraConfig, nil, opts...)
}

// startFaultEnvWith is startFaultEnv with options for serve as well.
func startFaultEnvWith(t *testing.T, extraConfig string, lsOpts []testenv.LazysnapOption,
	opts ...testenv.ContainerdOption) *faultEnv {
	t.Helper()
	requireLazyBinaries(t)
	e := &faultEnv{lazyEnv: lazyEnv{reg: testenv.StartRegistry(t)}}
	e.faults = testenv.StartFaultProxy(t, e.reg.Host)
	opts = append([]testenv.ContainerdOption{testenv.WithLazysnap(),
		testenv.WithRegistryHost(e.reg.Host), testenv.WithRegistryHost(e.faults.Host)}, opts...)
	e.cd = testenv.StartContainerd(t, opts...)
	lsOpts = append([]testenv.LazysnapOption{testenv.WithLazysnapConfig(lazysnapConfig(e.cd) + extraConfig)}, lsOpts...)
	e.ls = testenv.StartLazysnap(t, e.cd, lsOpts...)
	return e
}

// reboot stops what a reboot stops, in the order a shutdown does:
// containers and containerd, serve, fused (killed: a reboot does not wait
// for it to unmount), then every FUSE mount left, which the kernel drops at
// a reboot. Start again with startAfterReboot.
func (e *lazyEnv) reboot(t *testing.T) {
	t.Helper()
	e.cd.Reboot()
	e.ls.Stop()
	if pid := e.ls.FusedPID(); pid != 0 {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for e.ls.FusedPID() == pid {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := testenv.UnmountUnder(e.ls.Root); err != nil {
		t.Fatal(err)
	}
	if n := len(lazyMounts(t, e.ls.Root)); n != 0 {
		t.Fatalf("%d lazysnap mounts left after the reboot", n)
	}
}

// startAfterReboot starts containerd and serve as a booting node does;
// serve starts fused, which mounts the layers again in the background.
func (e *lazyEnv) startAfterReboot(t *testing.T) {
	t.Helper()
	e.cd.StartAgain()
	e.ls.Restart()
}

// TestRebootRemountsLayers simulates reboots of a node. With the registry
// up, every layer comes back and a new container of the image reads every
// file right. With the registry down at boot, containers of the image fail
// to start with an error naming the image and the layer, none starts on an
// empty layer; once the registry is back, serve retries the layers and
// containers start and read right again, without anyone restarting
// anything.
func TestRebootRemountsLayers(t *testing.T) {
	e := startFaultEnv(t, rebootConfig)
	img := testenv.BuildImage(t, e.reg, "reboot:gzip", smallImageLayers()...)
	ref := testenv.RefVia(e.convert(t, img, "reboot:esgz"), e.faults.Host)
	e.lazysnapPull(t, ref)
	assertListing(t, img, "/data", e.run(t, ref, "before", testenv.ListingCommand("/data")...))
	mounted := len(lazyMounts(t, e.ls.Root))

	e.reboot(t)
	e.startAfterReboot(t)
	assertListing(t, img, "/data", e.run(t, ref, "after-reboot", testenv.ListingCommand("/data")...))
	if n := len(lazyMounts(t, e.ls.Root)); n != mounted {
		t.Errorf("%d lazy mounts after the reboot, want %d as before", n, mounted)
	}

	e.reboot(t)
	e.faults.Set(testenv.FaultUnavailable)
	e.startAfterReboot(t)
	for i := range 3 { // fails every time, not only while the first attempt runs
		out, err := e.cd.Ctr(e.cd.RunArgs("lazysnap", ref, "registry-down", testenv.ListingCommand("/data")...)...)
		if err == nil {
			t.Fatalf("a container started with its layers unmounted and the registry down; it saw:\n%s", firstLines(out, 10))
		}
		if msg := err.Error(); !strings.Contains(msg, "is not mounted") || !strings.Contains(msg, "reboot:esgz") ||
			!strings.Contains(msg, "sha256:") {
			t.Fatalf("attempt %d: container start failed with %v; want an error naming the image and the layer", i, err)
		}
		time.Sleep(500 * time.Millisecond)
	}

	e.faults.Set(testenv.FaultNone)
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := e.cd.Ctr(e.cd.RunArgs("lazysnap", ref, "registry-back", testenv.ListingCommand("/data")...)...)
		if err == nil {
			assertListing(t, img, "/data", out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containers still fail a minute after the registry came back: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n := len(lazyMounts(t, e.ls.Root)); n != mounted {
		t.Errorf("%d lazy mounts after the registry came back, want %d", n, mounted)
	}
}
