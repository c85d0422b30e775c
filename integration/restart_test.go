package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// restartScript hashes the files under /data in order, pausing halfway
// (after /out/phase1) until the test creates /out/resume: every file read
// after the pause is read for the first time, so it must come through the
// FUSE mount the restarted snapshotter left alive.
const restartScript = `i=0
for f in $(find /data -type f | sort); do
  i=$((i+1))
  if [ $i -eq %d ]; then
    touch /out/phase1
    while [ ! -e /out/resume ]; do usleep 50000; done
  fi
  sha256sum "$f" >> /out/sums
done
touch /out/done
`

// TestLazyServeKilledWhileContainerReads SIGKILLs `lazysnap serve` while a
// container reads lazily mounted files, restarts it, and checks that the
// container's later reads still return the right content.
func TestLazyServeKilledWhileContainerReads(t *testing.T) {
	e := startLazyEnv(t)
	img := testenv.BuildImage(t, e.reg, "restart:gzip", smallImageLayers()...)
	ref := testenv.RefVia(e.convert(t, img, "restart:esgz"), e.proxy.Host)
	e.lazysnapPull(t, ref)

	out := t.TempDir()
	half := strings.Count(img.Listing("/data"), "\n") / 2
	args := e.cd.RunFlags("lazysnap", append([]string{"--detach"}, testenv.BindMount(out, "/out")...)...)
	args = append(args, ref, "reader", "/bin/sh", "-c", fmt.Sprintf(restartScript, half))
	e.cd.MustCtr(t, args...)

	waitForFile(t, filepath.Join(out, "phase1"))
	e.ls.Kill()
	e.ls.Restart()
	if err := os.WriteFile(filepath.Join(out, "resume"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitForFile(t, filepath.Join(out, "done"))

	sums, err := os.ReadFile(filepath.Join(out, "sums"))
	if err != nil {
		t.Fatal(err)
	}
	assertListing(t, img, "/data", string(sums))
}

// waitForFile waits until path exists. The deadline only guards against a
// hung container; it is not what the test checks.
func waitForFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within 5m", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
