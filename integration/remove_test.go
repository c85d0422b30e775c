package integration

import (
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestLazyImageRemovalUnmounts removes a lazily pulled image and checks
// that garbage collection removed its snapshots and their FUSE mounts.
func TestLazyImageRemovalUnmounts(t *testing.T) {
	e := startLazyEnv(t)
	img := testenv.BuildImage(t, e.reg, "remove:gzip", smallImageLayers()...)
	ref := testenv.RefVia(e.convert(t, img, "remove:esgz"), e.proxy.Host)
	e.lazysnapPull(t, ref)
	assertListing(t, img, "/data", e.run(t, ref, "remove", testenv.ListingCommand("/data")...))

	if n := len(lazyMounts(t, e.ls.Root)); n == 0 {
		t.Fatalf("no FUSE mount under %s after a lazy pull", e.ls.Root)
	}
	e.cd.MustCtr(t, "image", "rm", "--sync", ref)

	if left := snapshotKeys(t, e.cd, "lazysnap"); len(left) != 0 {
		t.Errorf("snapshots left after image removal: %v", left)
	}
	if left := lazyMounts(t, e.ls.Root); len(left) != 0 {
		t.Errorf("FUSE mounts left after image removal: %+v", left)
	}
}

// snapshotKeys lists the snapshot keys of snapshotter (`ctr snapshots ls`).
func snapshotKeys(t *testing.T, cd *testenv.Containerd, snapshotter string) []string {
	t.Helper()
	out := cd.MustCtr(t, "snapshots", "--snapshotter", snapshotter, "ls")
	var keys []string
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if fields := strings.Fields(line); i > 0 && len(fields) > 0 {
			keys = append(keys, fields[0])
		}
	}
	return keys
}
