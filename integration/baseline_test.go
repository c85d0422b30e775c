package integration

import (
	"os"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestBaselineOverlayfs checks the harness itself with no lazysnap part: a
// generated image pulled into overlayfs and run with runc shows exactly the
// generated files.
func TestBaselineOverlayfs(t *testing.T) {
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t)
	img := testenv.BuildImage(t, reg, "baseline:1", smallImageLayers()...)
	cd := testenv.StartContainerd(t, testenv.WithRegistryHost(reg.Host))

	cd.MustCtr(t, cd.PullArgs(img.Ref, "overlayfs")...)
	out := cd.MustCtr(t, cd.RunArgs("overlayfs", img.Ref, "baseline", testenv.ListingCommand("/data")...)...)
	assertListing(t, img, "/data", out)
}

// TestPullCommandOverlayfs runs `lazysnap pull --snapshotter overlayfs`: the
// client command works with any snapshotter, and with a non-remote one it
// downloads every layer.
func TestPullCommandOverlayfs(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat(testenv.LazysnapBin()); err != nil {
		t.Skip("needs bin/lazysnap: run make build")
	}
	reg := testenv.StartRegistry(t)
	img := testenv.BuildImage(t, reg, "pullcmd:1", smallImageLayers()...)
	cd := testenv.StartContainerd(t, testenv.WithRegistryHost(reg.Host))

	t.Log(runBinary(t, testenv.LazysnapBin(), "pull", "--address", cd.Address, "--namespace", cd.Namespace,
		"--hosts-dir", cd.HostsDir, "--snapshotter", "overlayfs", "--plain-http", img.Ref))
	if stored, total := layersInContentStore(t, cd, img.Ref); stored != total {
		t.Errorf("%d of %d layers in the content store; want all", stored, total)
	}
	out := cd.MustCtr(t, cd.RunArgs("overlayfs", img.Ref, "pullcmd", testenv.ListingCommand("/data")...)...)
	assertListing(t, img, "/data", out)
}
