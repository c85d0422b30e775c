package integration

import (
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestCRIOverlayfs runs the kubelet's path (crictl pull, runp, create,
// start) on overlayfs: it checks the CRI harness on its own.
func TestCRIOverlayfs(t *testing.T) {
	testenv.RequireRoot(t)
	reg := testenv.StartRegistry(t)
	pause := testenv.BuildPauseImage(t, reg)
	img := testenv.BuildImage(t, reg, "cri:1", smallImageLayers()...)
	cd := testenv.StartContainerd(t, testenv.WithNamespace("k8s.io"), testenv.WithRegistryHost(reg.Host),
		testenv.WithCRI(pause, "overlayfs"))

	cd.MustCrictl(t, "pull", img.Ref)
	out := cd.RunPodContainer(t, "listing", img.Ref, testenv.ListingCommand("/data"))
	assertListing(t, img, "/data", out)
}

// TestCRILazy runs a container of an eStargz image through CRI with lazysnap
// as CRI's snapshotter: crictl pull leaves the layers in the registry and the
// container sees exactly the generated files.
func TestCRILazy(t *testing.T) {
	e := newLazyEnv(t)
	pause := testenv.BuildPauseImage(t, e.reg)
	img := testenv.BuildImage(t, e.reg, "cri:gzip", smallImageLayers()...)
	lazy := e.convert(t, img, "cri:esgz")
	e.start(t, testenv.WithNamespace("k8s.io"), testenv.WithCRI(pause, "lazysnap"))

	ref := testenv.RefVia(lazy, e.proxy.Host)
	e.cd.MustCrictl(t, "pull", ref)
	if stored, total := layersInContentStore(t, e.cd, ref); stored != 0 {
		t.Errorf("crictl pull downloaded %d of %d eStargz layers; want all mounted lazily", stored, total)
	}
	out := e.cd.RunPodContainer(t, "lazy-listing", ref, testenv.ListingCommand("/data"))
	assertListing(t, img, "/data", out)
}
