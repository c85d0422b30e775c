package integration

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestFusedKilledIsRestarted SIGKILLs `lazysnap fused` (as the OOM killer
// would): serve notices within its watch interval, starts it again and
// mounts the image's layers again, so a new container of the image reads
// every file correctly without anyone restarting anything. Where the host
// lets a process lower its OOM score, fused runs at -999.
func TestFusedKilledIsRestarted(t *testing.T) {
	e := startLazyEnv(t)
	img := testenv.BuildImage(t, e.reg, "supervise:gzip", smallImageLayers()...)
	ref := testenv.RefVia(e.convert(t, img, "supervise:esgz"), e.proxy.Host)
	e.lazysnapPull(t, ref)
	assertListing(t, img, "/data", e.run(t, ref, "before", testenv.ListingCommand("/data")...))

	old := e.ls.FusedPID()
	if old == 0 {
		t.Fatal("no fused runs")
	}
	checkOOMScore(t, old)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	deadline := start.Add(2 * time.Minute)
	for pid := e.ls.FusedPID(); pid == 0 || pid == old; pid = e.ls.FusedPID() {
		if time.Now().After(deadline) {
			t.Fatal("fused was not started again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("fused started again %v after the kill", time.Since(start).Round(time.Millisecond))
	assertListing(t, img, "/data", e.run(t, ref, "after", testenv.ListingCommand("/data")...))
	if n := len(lazyMounts(t, e.ls.Root)); n == 0 {
		t.Error("no lazy mount after fused was started again")
	}
}

// checkOOMScore checks fused's OOM score adjustment where this host lets a
// process lower its own (CAP_SYS_RESOURCE), and says so where it does not.
func checkOOMScore(t *testing.T, pid int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(string(b))
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1"), 0); err != nil {
		t.Logf("this host does not let a process lower its OOM score (%v); fused's is %s", err, got)
		return
	}
	os.WriteFile("/proc/self/oom_score_adj", []byte("0"), 0)
	if got != "-999" {
		t.Errorf("fused's oom_score_adj is %s, want -999", got)
	}
}
