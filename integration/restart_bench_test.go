package integration

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// BenchmarkRestartWith20Images mounts the 20 lazy images of
// BenchmarkDaemonMemory20Images (41 layers), then measures how long the
// node takes to answer containerd again and to have every layer answering:
//
//   - after `lazysnap serve` is killed (fused keeps every mount);
//   - after `lazysnap fused` is killed (serve restarts it, and the new fused
//     resumes the mounts it hands over);
//   - after a reboot: containers, containerd, serve and fused stopped and
//     every FUSE mount dropped, then containerd and serve started again
//     (serve mounts every layer again in the background).
//
// Answering is measured as the test harness sees it: containerd reaching
// serve, polled every 100 ms. Run it alone:
//
//	go test -run '^$' -bench BenchmarkRestartWith20Images -benchtime 1x ./integration/
func BenchmarkRestartWith20Images(b *testing.B) {
	testenv.RequireFUSE(b)
	if !haveLazyBinaries() {
		b.Skip("needs bin/lazysnap and bin/lazyconv: run make build")
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cd, ls := mountTwentyImages(b)
		want := len(liveLazyMounts(b, ls.Root))
		fmt.Printf("%d lazy layers mounted\n", want)

		start := time.Now()
		ls.Kill()
		ls.Restart()
		report(b, "serve-kill-answer-s", time.Since(start))
		report(b, "serve-kill-all-layers-s", waitLiveMounts(b, ls.Root, want, start))

		start = time.Now()
		if err := syscall.Kill(ls.FusedPID(), syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		report(b, "fused-kill-all-layers-s", waitLiveMounts(b, ls.Root, want, start))

		cd.Reboot()
		ls.Stop()
		if pid := ls.FusedPID(); pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			for ls.FusedPID() == pid {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if err := testenv.UnmountUnder(ls.Root); err != nil {
			b.Fatal(err)
		}
		cd.StartAgain()
		start = time.Now()
		ls.Restart()
		report(b, "reboot-answer-s", time.Since(start))
		report(b, "reboot-all-layers-s", waitLiveMounts(b, ls.Root, want, start))
	}
}

func report(b *testing.B, unit string, d time.Duration) {
	b.ReportMetric(d.Seconds(), unit)
	fmt.Printf("%s: %.2f s\n", unit, d.Seconds())
}

// mountTwentyImages starts the stack and pulls and runs the memoryImages
// images (see memoryLayers).
func mountTwentyImages(b *testing.B) (*testenv.Containerd, *testenv.Lazysnap) {
	b.Helper()
	reg := testenv.StartRegistry(b)
	refs := make([]string, memoryImages)
	for i := range refs {
		refs[i] = buildMemoryImage(b, reg, i)
	}
	cd := testenv.StartContainerd(b, testenv.WithLazysnap(), testenv.WithRegistryHost(reg.Host))
	ls := testenv.StartLazysnap(b, cd, testenv.WithLazysnapConfig(lazysnapConfig(cd)))
	for i, ref := range refs {
		runBinary(b, testenv.LazysnapBin(), "pull", "--address", cd.Address, "--namespace", cd.Namespace,
			"--hosts-dir", cd.HostsDir, "--snapshotter", "lazysnap", "--plain-http", ref)
		runMemoryWorkload(b, cd, ref, i)
	}
	return cd, ls
}

// waitLiveMounts waits until want lazy mounts under root answer, and
// returns the time since start.
func waitLiveMounts(b *testing.B, root string, want int, start time.Time) time.Duration {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if n := len(liveLazyMounts(b, root)); n >= want {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			b.Fatalf("fewer than %d lazy mounts answer 5 minutes after the restart", want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// liveLazyMounts returns the FUSE mounts under root whose server answers a
// statfs (one whose server is gone, and not taken over, fails it; one
// being taken over waits until it is).
func liveLazyMounts(b *testing.B, root string) []string {
	b.Helper()
	infos, err := testenv.MountInfo()
	if err != nil {
		b.Fatal(err)
	}
	var (
		mu   sync.Mutex
		live []string
		wg   sync.WaitGroup
	)
	for _, m := range infos {
		if !strings.HasPrefix(m.FSType, "fuse") || !strings.HasPrefix(m.MountPoint, root+"/") {
			continue
		}
		wg.Go(func() {
			var st unix.Statfs_t
			if unix.Statfs(m.MountPoint, &st) == nil {
				mu.Lock()
				live = append(live, m.MountPoint)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return live
}
