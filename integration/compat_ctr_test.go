package integration

import (
	"testing"

	"github.com/lazysnap/lazysnap/install"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestCompatCtrPullAfterInstallMerge starts containerd 2.4.2 from a config
// merged by the installer (install.MergeContainerdConfig, which Install
// writes) instead of the test's own unpack entries: `ctr image pull
// --snapshotter lazysnap` is lazy, and a plain `ctr image pull` still
// unpacks into overlayfs, which the merge must keep since a written
// unpack_config replaces containerd's built-in one.
func TestCompatCtrPullAfterInstallMerge(t *testing.T) {
	e := newLazyEnv(t)
	e.start(t, testenv.WithoutUnpackConfig(), testenv.WithConfigFilter(installerMerge))
	img := testenv.BuildImage(t, e.reg, "ctr:gzip", smallImageLayers()...)
	lazy := testenv.RefVia(e.convert(t, img, "ctr:esgz"), e.proxy.Host)

	t.Run("lazysnap", func(t *testing.T) {
		e.cd.MustCtr(t, e.cd.PullArgs(lazy, "lazysnap")...)
		if stored, total := layersInContentStore(t, e.cd, lazy); stored != 0 {
			t.Errorf("ctr image pull --snapshotter lazysnap downloaded %d of %d layers; want none", stored, total)
		}
		if n := len(lazyMounts(t, e.ls.Root)); n == 0 {
			t.Error("no FUSE mount after ctr image pull --snapshotter lazysnap")
		}
		assertListing(t, img, "/data", e.run(t, lazy, "ctr-lazy", testenv.ListingCommand("/data")...))
	})
	t.Run("default", func(t *testing.T) {
		plain := testenv.RefVia(img.Ref, e.proxy.Host)
		e.cd.MustCtr(t, "image", "pull", "--hosts-dir", e.cd.HostsDir, plain)
		if len(snapshotKeys(t, e.cd, "overlayfs")) == 0 {
			t.Fatal("ctr image pull without --snapshotter unpacked nothing into overlayfs")
		}
		out := e.cd.MustCtr(t, e.cd.RunArgs("overlayfs", plain, "ctr-default", testenv.ListingCommand("/data")...)...)
		assertListing(t, img, "/data", out)
	})
}

// installerMerge merges lazysnap into the test containerd's config the way
// `lazysnap-install install` does, pointing at the test's lazysnap.
func installerMerge(c *testenv.Containerd, cfg []byte) ([]byte, error) {
	merged, _, err := install.MergeContainerdConfig(cfg,
		install.WithSocket(c.Proxy.Socket), install.WithRootDir(c.Proxy.Root))
	return merged, err
}
