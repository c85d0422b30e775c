package integration

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestLazyPullListing pulls an eStargz image with `lazysnap pull`: no layer
// is downloaded into containerd's content store, and the container sees
// exactly the generated files.
func TestLazyPullListing(t *testing.T) {
	e := startLazyEnv(t)
	img := testenv.BuildImage(t, e.reg, "small:gzip", smallImageLayers()...)
	ref := testenv.RefVia(e.convert(t, img, "small:esgz"), e.proxy.Host)

	t.Log(e.lazysnapPull(t, ref))
	if stored, total := layersInContentStore(t, e.cd, ref); stored != 0 {
		t.Errorf("%d of %d eStargz layers were downloaded by the pull; want all mounted lazily", stored, total)
	}
	out := e.run(t, ref, "lazy-listing", testenv.ListingCommand("/data")...)
	assertListing(t, img, "/data", out)
}

// TestLazyTransferServicePull pulls with `ctr image pull --snapshotter
// lazysnap`, which goes through containerd's transfer service: it is lazy
// too when the proxy plugin exports enable_remote_snapshot_annotations.
func TestLazyTransferServicePull(t *testing.T) {
	e := startLazyEnv(t)
	img := testenv.BuildImage(t, e.reg, "small:gzip", smallImageLayers()...)
	ref := testenv.RefVia(e.convert(t, img, "small:esgz"), e.proxy.Host)

	e.cd.MustCtr(t, e.cd.PullArgs(ref, "lazysnap")...)
	stored, total := layersInContentStore(t, e.cd, ref)
	t.Logf("transfer-service pull: %d of %d layers downloaded, %d blob bytes served (image %d bytes)",
		stored, total, e.proxy.BlobBytes(), img.CompressedSize)
	if stored != 0 {
		t.Errorf("transfer-service pull downloaded %d of %d layers; want it lazy", stored, total)
	}
	out := e.run(t, ref, "transfer-listing", testenv.ListingCommand("/data")...)
	assertListing(t, img, "/data", out)
}

// TestLazyLargeImageReadsLittle runs a workload reading about 7% of a
// 300 MB image: the registry serves a small fraction of the image's bytes
// before the container exits.
func TestLazyLargeImageReadsLittle(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 300 MB image")
	}
	e := newLazyEnv(t)
	// Background fetch would download the rest of the image while the
	// workload runs; this test is about what reads alone fetch.
	e.extraConfig = "[background_fetch]\nenable = false\n"
	e.start(t)
	img := testenv.BuildImage(t, e.reg, "large:gzip", largeImageLayers()...)
	ref := testenv.RefVia(e.convert(t, img, "large:esgz"), e.proxy.Host)
	e.proxy.Reset()

	e.lazysnapPull(t, ref)
	read := []string{"/data/l1/file003", "/data/l3/file007"}
	out := e.run(t, ref, "large", append([]string{"sha256sum"}, read...)...)
	served := e.proxy.BlobBytes()

	assertSums(t, img, read, out)
	t.Logf("served %d of %d image bytes (%.1f%%) in %d blob GETs", served, img.CompressedSize,
		100*float64(served)/float64(img.CompressedSize), e.proxy.BlobGets())
	if limit := img.CompressedSize / 5; served > limit {
		t.Errorf("registry served %d bytes before the container exited; want at most %d (20%% of %d)",
			served, limit, img.CompressedSize)
	}
}

// TestLazyPlainAndMixedImages runs an image mixing eStargz and gzip layers,
// then a plain gzip image (every layer falls back to a normal pull).
func TestLazyPlainAndMixedImages(t *testing.T) {
	e := startLazyEnv(t)
	img := testenv.BuildImage(t, e.reg, "mix:gzip", smallImageLayers()...)
	lazy := e.convert(t, img, "mix:esgz")
	mixed := testenv.RefVia(e.reg.Ref("mix:mixed"), e.proxy.Host)
	testenv.MixLayers(t, e.reg.Ref("mix:mixed"), lazy, img.Ref, lazy)

	t.Run("mixed", func(t *testing.T) {
		e.lazysnapPull(t, mixed)
		stored := layersStored(t, e.cd, mixed)
		// containerd's unpacker downloads every layer from the first one the
		// snapshotter cannot mount on, so only layer 0 is sure to stay remote;
		// layer 2 is still mounted lazily (two FUSE mounts).
		if stored[0] || !stored[1] {
			t.Errorf("layers in the content store: %v; want layer 0 (eStargz) absent, layer 1 (gzip) present", stored)
		}
		if n := len(lazyMounts(t, e.ls.Root)); n != 2 {
			t.Errorf("%d FUSE mounts after pulling the mixed image; want 2 (its eStargz layers)", n)
		}
		assertListing(t, img, "/data", e.run(t, mixed, "mix-mixed", testenv.ListingCommand("/data")...))
	})
	t.Run("plain", func(t *testing.T) {
		ref := testenv.RefVia(img.Ref, e.proxy.Host)
		e.lazysnapPull(t, ref)
		if stored, total := layersInContentStore(t, e.cd, ref); stored != total {
			t.Errorf("%d of %d gzip layers in the content store; want all", stored, total)
		}
		assertListing(t, img, "/data", e.run(t, ref, "mix-plain", testenv.ListingCommand("/data")...))
	})
}

// layersInContentStore counts the layers of ref present in containerd's
// content store: a lazily mounted layer is never downloaded there.
func layersInContentStore(t *testing.T, cd *testenv.Containerd, ref string) (stored, total int) {
	t.Helper()
	present := layersStored(t, cd, ref)
	for _, p := range present {
		if p {
			stored++
		}
	}
	return stored, len(present)
}

// layersStored tells, for each layer of ref, whether its blob is in
// containerd's content store.
func layersStored(t *testing.T, cd *testenv.Containerd, ref string) []bool {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), cd.Namespace)
	img, err := cd.Client.GetImage(ctx, ref)
	if err != nil {
		t.Fatalf("getting image %s: %v", ref, err)
	}
	manifest, err := images.Manifest(ctx, cd.Client.ContentStore(), img.Target(), img.Platform())
	if err != nil {
		t.Fatalf("reading manifest of %s: %v", ref, err)
	}
	present := make([]bool, len(manifest.Layers))
	for i, l := range manifest.Layers {
		_, err := cd.Client.ContentStore().Info(ctx, l.Digest)
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("content info %s: %v", l.Digest, err)
		}
		present[i] = err == nil
	}
	return present
}
